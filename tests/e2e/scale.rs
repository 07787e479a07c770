//! Scale-out (issue 14) as separate processes on loopback: a moto S3
//! server, two `--role ingest` nodes, a `--role query` node and
//! `--role compact` nodes over one bucket, loaded with a small copy of the
//! shared workload sent round robin per request, so that traces are split
//! across the ingest nodes.
//!
//! The truth of a partly sent workload is what was acknowledged: the test
//! decodes each request file it sent and counts, per trace, the spans and
//! logs of the requests that got a 200, and every answer must hold exactly
//! those (nothing lost, nothing twice).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::Value;
use skein_storage::testsuite::Moto;

use crate::support::{client, eventually, query, skein_bin};

const BUCKET: &str = "skein-scale";

/// Ingest nodes keep everything in their heads until told to flush, so
/// "before upload" and "after upload" are states the test chooses.
const INGEST_TOML: &str = "[head]\nidle_timeout = \"30m\"\nmax_trace_age = \"1h\"\n";
/// A query node that polls the bucket every second and gives up on a
/// silent ingest node after one.
const QUERY_TOML: &str = "[cluster]\ncatalog_poll_interval = \"1s\"\nfanout_timeout = \"1s\"\n";
/// A compactor that acts quickly and whose lease expires in 3 s
/// (the interface of `--role compact`, docs/scaling.md). Inputs are
/// deleted 10 s after their output is committed: longer than the query
/// nodes' poll plus a query's deadline, as a reader needs.
const COMPACT_TOML: &str = "[compaction]\ninterval = \"1s\"\nlease_duration = \"3s\"\nlease_retry_interval = \"500ms\"\ndeletion_delay = \"10s\"\nmin_age = \"1s\"\n[cluster]\ncatalog_poll_interval = \"1s\"\n[query]\ntimeout = \"5s\"\n";
const LEASE: Duration = Duration::from_secs(3);
const LEASE_RETRY: Duration = Duration::from_millis(500);

/// The moto server, the bucket and the AWS variables every node gets.
struct Bucket {
    moto: Moto,
    /// `s3://BUCKET/cluster`
    url: String,
}

impl Bucket {
    fn start() -> Bucket {
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        Bucket { moto, url: format!("s3://{BUCKET}/cluster") }
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Object keys under `cluster/{prefix}` (S3 ListObjectsV2, first page).
    fn keys(&self, prefix: &str) -> Vec<String> {
        let url = format!(
            "{}/{BUCKET}?{}",
            self.moto.endpoint,
            query(&[("list-type", "2"), ("prefix", &format!("cluster/{prefix}"))])
        );
        let text = client().get(url).send().expect("list bucket").text().unwrap();
        text.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect()
    }
}

/// One `skein serve` process of any role, its stderr kept for the test.
struct Node {
    name: String,
    child: Option<Child>,
    data_dir: PathBuf,
    _config: tempfile::NamedTempFile,
    args: Vec<String>,
    env: Vec<(String, String)>,
    http: String,
    otlp_http: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `skein serve ARGS` with `toml` as its config file on a
    /// data directory of its own, and waits for its ready line.
    fn spawn(name: &str, data_dir: &Path, args: &[&str], toml: &str, env: Vec<(String, String)>) -> Node {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), toml).unwrap();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.extend(["--config".to_string(), config.path().display().to_string()]);
        let mut n = Node {
            name: name.to_string(),
            child: None,
            data_dir: data_dir.to_path_buf(),
            _config: config,
            args,
            env,
            http: String::new(),
            otlp_http: String::new(),
            log: Arc::default(),
        };
        n.launch("127.0.0.1:0");
        n
    }

    /// Starts the process with its HTTP API on `http_addr`; reads the
    /// ports back from the ready line.
    fn launch(&mut self, http_addr: &str) {
        let mut cmd = Command::new(skein_bin());
        cmd.args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
            .args(["--zipkin-addr", "127.0.0.1:0", "--http-addr", http_addr])
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("SKEIN_LOG", "warn")
            .env("SKEIN_LOG_FORMAT", "json")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start skein");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let stderr = child.stderr.take().unwrap();
        let (log, name) = (self.log.clone(), self.name.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(l)) => l,
            _ => {
                std::thread::sleep(Duration::from_millis(300));
                panic!("{}: no ready line; stderr: {:?}", self.name, self.log.lock().unwrap())
            }
        };
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k} in {line:?}"))
                .to_string()
        };
        self.http = field("http");
        self.otlp_http = field("otlp_http");
    }

    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    fn wait_ready(&self) {
        eventually(60, || {
            let r = client().get(format!("{}/readyz", self.url())).send().ok()?;
            r.status().is_success().then_some(())
        });
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = client().get(format!("{}{path}", self.url())).send().expect("GET");
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }

    fn get_ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path);
        assert_eq!(s, 200, "{} GET {path}: {v}", self.name);
        v
    }

    fn flush(&self) {
        let r = client().post(format!("{}/api/v1/flush", self.url())).send().expect("flush");
        assert!(r.status().is_success(), "{} flush: {}", self.name, r.status());
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.pid()]).status().unwrap().success());
    }

    /// SIGKILL: no flush, no clean stop.
    fn kill(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM: it must exit 0 (its head flushed and uploaded).
    fn terminate(&mut self) {
        self.signal("-TERM");
        let mut c = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert!(st.success(), "{} exited with {st:?} on SIGTERM", self.name);
                return;
            }
            assert!(Instant::now() < deadline, "{} did not exit after SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again on the same data directory and the same HTTP address,
    /// so the query node's `--ingest-nodes` still names it.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let http = self.http.clone();
        self.launch(&http);
        self.wait_ready();
    }

    /// The JSON log lines whose message contains `needle`.
    fn logged(&self, needle: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone())))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ingest(bucket: &Bucket, id: &str, dir: &Path) -> Node {
    let n = Node::spawn(
        id,
        dir,
        &["--role", "ingest", "--node-id", id, "--storage-url", &bucket.url],
        INGEST_TOML,
        bucket.env(),
    );
    n.wait_ready();
    n
}

fn query_node(bucket: &Bucket, dir: &Path, ingest: &[&Node]) -> Node {
    let nodes = ingest.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    let q = Node::spawn(
        "query",
        dir,
        &["--role", "query", "--node-id", "q1", "--storage-url", &bucket.url, "--ingest-nodes", &nodes],
        QUERY_TOML,
        bucket.env(),
    );
    q.wait_ready();
    q
}

fn compactor(bucket: &Bucket, id: &str, dir: &Path) -> Node {
    let mut env = bucket.env();
    // The lease's log lines are at info.
    env.push(("SKEIN_LOG".into(), "info".into()));
    Node::spawn(
        id,
        dir,
        &["--role", "compact", "--node-id", id, "--storage-url", &bucket.url],
        COMPACT_TOML,
        env,
    )
}

/// Spans and logs per trace ID (hex).
type Counts = BTreeMap<String, (u64, u64)>;

/// A small copy of the shared workload: its request files in sending
/// order and what each holds.
struct Workload {
    _dir: tempfile::TempDir,
    /// (OTLP/HTTP path, body, counts per trace)
    requests: Vec<(&'static str, Vec<u8>, Counts)>,
    /// Each request's number among the requests of its kind (traces, logs).
    nth: Vec<usize>,
    /// truth.jsonl as counts.
    truth: Counts,
    /// The workload's time range, Unix ns (with a minute of margin).
    start_ns: u64,
    end_ns: u64,
}

impl Workload {
    /// `gen_workload.py --traces N`, starting 20 minutes ago (so that the
    /// data is fresh for retention and the default query ranges).
    fn generate(traces: u32) -> Workload {
        let dir = tempfile::tempdir().unwrap();
        let gen = std::env::var_os("SKEIN_WORKLOAD_GEN").map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/workload/gen_workload.py")
        });
        assert!(gen.exists(), "{} not found: set SKEIN_WORKLOAD_GEN", gen.display());
        let start =
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 1_200_000_000_000;
        let out = Command::new("python3")
            .arg(&gen)
            .args(["--seed", "14", "--traces", &traces.to_string(), "--no-zstd"])
            .args(["--spans-per-request", "100", "--logs-per-request", "100"])
            .args(["--start-unix-nano", &start.to_string(), "--out"])
            .arg(dir.path())
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "gen_workload.py failed (it needs `pip install opentelemetry-proto protobuf`, as scripts/test.sh does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pb"))
            .collect();
        // traces-00000, logs-00000, traces-00001, ...: both kinds all along.
        names.sort_by_key(|n| (n.rsplit('-').next().unwrap().to_string(), n.starts_with("logs")));
        let mut requests = Vec::new();
        let (mut min, mut max) = (u64::MAX, 0);
        for name in names {
            let body = std::fs::read(dir.path().join(&name)).unwrap();
            let mut counts = Counts::new();
            if name.starts_with("traces") {
                let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                for s in req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                    counts.entry(hex::encode(&s.trace_id)).or_default().0 += 1;
                    min = min.min(s.start_time_unix_nano);
                    max = max.max(s.end_time_unix_nano);
                }
                requests.push(("/v1/traces", body, counts));
            } else {
                let req = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
                for l in req.resource_logs.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records) {
                    if !l.trace_id.is_empty() {
                        counts.entry(hex::encode(&l.trace_id)).or_default().1 += 1;
                    }
                    min = min.min(l.time_unix_nano);
                    max = max.max(l.time_unix_nano);
                }
                requests.push(("/v1/logs", body, counts));
            }
        }
        let truth = std::fs::read_to_string(dir.path().join("truth.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let t: Value = serde_json::from_str(l).unwrap();
                (
                    t["trace_id"].as_str().unwrap().to_string(),
                    (t["span_count"].as_u64().unwrap(), t["log_count"].as_u64().unwrap()),
                )
            })
            .collect();
        let (mut traces, mut logs) = (0, 0);
        let nth = requests
            .iter()
            .map(|r| {
                let c = if r.0 == "/v1/traces" { &mut traces } else { &mut logs };
                *c += 1;
                *c - 1
            })
            .collect();
        let w = Workload {
            _dir: dir,
            requests,
            nth,
            truth,
            start_ns: min - 60_000_000_000,
            end_ns: max + 60_000_000_000,
        };
        assert_eq!(w.counts(0..w.requests.len()), w.truth, "the request files hold what truth.jsonl says");
        w
    }

    /// Which of `n` nodes request `i` goes to: round robin per request,
    /// over the trace requests and over the log requests apart, as each
    /// signal's exporter of an SDK sends on its own.
    fn node_of(&self, i: usize, n: usize) -> usize {
        self.nth[i] % n
    }

    /// What the requests `idx` hold together.
    fn counts(&self, idx: impl IntoIterator<Item = usize>) -> Counts {
        let mut c = Counts::new();
        for i in idx {
            for (t, (s, l)) in &self.requests[i].2 {
                let e = c.entry(t.clone()).or_default();
                e.0 += s;
                e.1 += l;
            }
        }
        c
    }
}

/// POSTs request `i` of `w` to `node`'s OTLP/HTTP receiver: whether it was
/// acknowledged (a 200; anything else, or no answer, is not).
fn send(w: &Workload, i: usize, node: &Node) -> bool {
    let (path, body, _) = &w.requests[i];
    client()
        .post(format!("http://{}{path}", node.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Sends every request of `w`, round robin over `nodes`; all must be
/// acknowledged. Returns which node each went to.
fn send_all(w: &Workload, nodes: &[&Node]) -> Vec<usize> {
    (0..w.requests.len())
        .map(|i| {
            let n = w.node_of(i, nodes.len());
            assert!(send(w, i, nodes[n]), "request {i} to {} not acknowledged", nodes[n].name);
            n
        })
        .collect()
}

/// Every trace of `expect` comes back from `q` with exactly its span and
/// log counts, each span once; with `whole`, no answer is partial.
fn check_traces(q: &Node, expect: &Counts, whole: bool, when: &str) {
    for (id, (spans, logs)) in expect {
        let (status, v) = q.get(&format!("/api/v1/traces/{id}"));
        if *spans == 0 && status == 404 {
            // Only logs of this trace were acknowledged: no trace to show.
            continue;
        }
        assert_eq!(status, 200, "{when}: trace {id}: {v}");
        let got = v["spans"].as_array().map_or(0, Vec::len) as u64;
        let ids: BTreeSet<&str> =
            v["spans"].as_array().into_iter().flatten().filter_map(|s| s["span_id"].as_str()).collect();
        let got_logs = v["logs"].as_array().map_or(0, Vec::len) as u64;
        assert_eq!(
            (got, got_logs),
            (*spans, *logs),
            "{when}: trace {id}: spans and logs; warnings {}",
            v["warnings"]
        );
        assert_eq!(ids.len() as u64, got, "{when}: trace {id}: a span twice");
        if whole {
            assert!(v.get("warnings").is_none(), "{when}: trace {id}: {}", v["warnings"]);
        }
    }
}

/// A trace with spans in requests that went to different nodes.
fn split_trace(w: &Workload, went_to: &[usize]) -> String {
    let mut nodes: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    for (i, n) in went_to.iter().enumerate() {
        if w.requests[i].0 == "/v1/traces" {
            for t in w.requests[i].2.keys() {
                nodes.entry(t).or_default().insert(*n);
            }
        }
    }
    nodes
        .into_iter()
        .find(|(_, n)| n.len() > 1)
        .map(|(t, _)| t.to_string())
        .expect("a trace split across nodes")
}

/// The acceptance test of issue 14 without the compactor: two ingest
/// nodes, one query node; SIGKILL of one ingest node during the load and
/// a restart on its data directory; partial answers while a node is
/// stopped; every trace whole before and after upload.
#[test]
fn two_ingest_nodes_one_query_node() {
    let bucket = Bucket::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = ingest(&bucket, "n1", dirs[0].path());
    let mut n2 = ingest(&bucket, "n2", dirs[1].path());
    let q = query_node(&bucket, dirs[2].path(), &[&n1, &n2]);
    let w = Workload::generate(120);
    let total = w.requests.len();
    assert!(total >= 10, "{total} requests");

    // Round robin; n2 is killed right after its answer to its first
    // request past half-way, so the requests it misses got no answer and
    // are not acknowledged (none is in flight when it dies).
    let kill_after = (total / 2..total).find(|&i| w.node_of(i, 2) == 1).unwrap();
    let (mut acked, mut missed) = (Vec::new(), Vec::new());
    let mut went_to = Vec::new();
    for i in 0..total {
        let k = w.node_of(i, 2);
        let node = if k == 0 { &n1 } else { &n2 };
        went_to.push(k);
        if k == 1 && i > kill_after {
            assert!(!send(&w, i, node), "request {i} acknowledged by a killed node");
            missed.push(i);
            continue;
        }
        assert!(send(&w, i, node), "request {i} to {} not acknowledged", node.name);
        acked.push(i);
        if i == kill_after {
            n2.kill();
        }
    }
    let split = split_trace(&w, &went_to);

    // n2 down: answers are partial, name it, and do not fail.
    let (s, v) = q.get(&format!("/api/v1/traces/{split}"));
    assert_eq!(s, 200, "{v}");
    assert!(v["warnings"].to_string().contains(&n2.url()), "{v}");
    let (s, v) = q.get(&format!("/api/v1/search/traces?{}", query(&[("start", &w.start_ns.to_string())])));
    assert_eq!(s, 200, "{v}");
    assert!(v["warnings"].to_string().contains(&n2.url()), "{v}");
    assert!(!v["traces"].as_array().unwrap().is_empty(), "n1's traces: {v}");

    // Restarted on its data directory: its WAL holds exactly what it
    // acknowledged. Nothing is uploaded yet: all of it comes from the heads.
    n2.restart();
    check_traces(&q, &w.counts(acked.iter().copied()), true, "after the restart, before upload");
    let parquet = |prefix: &str| bucket.keys(prefix).into_iter().filter(|k| k.ends_with(".parquet")).count();
    assert_eq!(parquet("nodes/"), 0, "nothing uploaded yet: {:?}", bucket.keys("nodes/"));

    // The exporter's retry of what was refused: the whole workload, once.
    for &i in &missed {
        assert!(send(&w, i, &n2), "request {i} again");
    }
    check_traces(&q, &w.truth, true, "before upload");

    // A stopped (not killed) node: the fan-out gives up after
    // cluster.fanout_timeout and the answer is partial, not a failure.
    n1.signal("-STOP");
    let (s, v) = q.get(&format!("/api/v1/traces/{split}"));
    let (s_j, v_j) = q.get(&format!("/jaeger/api/traces/{split}"));
    n1.signal("-CONT");
    assert_eq!(s, 200, "{v}");
    let w1 = v["warnings"].to_string();
    assert!(w1.contains(&n1.url()) && w1.contains("did not answer"), "{v}");
    assert!((v["spans"].as_array().unwrap().len() as u64) < w.truth[&split].0, "only n2's spans: {v}");
    assert_eq!(s_j, 200, "{v_j}");
    assert!(v_j["errors"].to_string().contains(&n1.url()), "{v_j}");

    // After upload: flushed to the bucket under each node's prefix.
    n1.flush();
    n2.flush();
    for id in ["n1", "n2"] {
        assert!(
            parquet(&format!("nodes/{id}/segments/")) > 0,
            "{id}'s segments: {:?}",
            bucket.keys("nodes/")
        );
    }
    check_traces(&q, &w.truth, true, "after upload");
    let v = q.get_ok(&format!("/jaeger/api/traces/{split}"));
    assert_eq!(v["data"][0]["spans"].as_array().unwrap().len() as u64, w.truth[&split].0, "{v}");
    let v = q.get_ok(&format!("/tempo/api/traces/{split}"));
    let tempo_spans: usize = v["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["scopeSpans"].as_array().unwrap())
        .map(|s| s["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(tempo_spans as u64, w.truth[&split].0, "{v}");

    // With both ingest nodes stopped cleanly, the bucket alone holds
    // everything (the answers say the nodes did not answer).
    let (mut n1, mut n2) = (n1, n2);
    n1.terminate();
    n2.terminate();
    check_traces(&q, &w.truth, false, "from the bucket alone");
    let (_, v) = q.get(&format!("/api/v1/traces/{split}"));
    assert!(v["warnings"].to_string().contains(&n1.url()), "{v}");
}

/// After compaction across both nodes' prefixes, every trace is still
/// whole, and answers stay whole while the compactor works. Needs
/// `--role compact` (COMPACT's part of issue 14).
#[test]
fn compaction_across_node_prefixes_keeps_every_trace_whole() {
    let bucket = Bucket::start();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = ingest(&bucket, "n1", dirs[0].path());
    let n2 = ingest(&bucket, "n2", dirs[1].path());
    let q = query_node(&bucket, dirs[2].path(), &[&n1, &n2]);
    let w = Workload::generate(120);
    // Three rounds, each flushed: several small segments per node.
    let total = w.requests.len();
    let mut sent = 0;
    for round in 1..=3 {
        let upto = total * round / 3;
        for i in sent..upto {
            let node = if w.node_of(i, 2) == 0 { &n1 } else { &n2 };
            assert!(send(&w, i, node), "request {i}");
        }
        sent = upto;
        n1.flush();
        n2.flush();
    }
    check_traces(&q, &w.truth, true, "after upload");
    let segments = || q.get_ok("/api/v1/status")["segments"].as_u64().unwrap();
    let before = eventually(30, || (segments() >= 4).then(segments));
    let in_bucket = || bucket.keys("").iter().filter(|k| k.ends_with("spans.parquet")).count();
    let uploaded = in_bucket();
    assert!(uploaded >= 4, "{:?}", bucket.keys(""));

    let c = compactor(&bucket, "c1", dirs[3].path());
    eventually(30, || (!c.logged("compactor lease acquired").is_empty()).then_some(()));
    // Readers keep working through it: whole answers at every poll until
    // the query node's catalog holds fewer, merged segments.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        check_traces(&q, &w.truth, true, "during compaction");
        if segments() < before {
            break;
        }
        assert!(Instant::now() < deadline, "no compaction within 180 s: {before} segments");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Whole while the inputs are still in the bucket, and once they are
    // deleted (deletion_delay after the output) and polled away.
    check_traces(&q, &w.truth, true, "after compaction");
    eventually(120, || (in_bucket() < uploaded).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    check_traces(&q, &w.truth, true, "after the inputs were deleted");
    assert!(c.logged("compactor lease lost").is_empty());
}

/// The first `compactor lease acquired` line of `n`: its epoch.
fn acquired_epoch(n: &Node) -> Option<u64> {
    let l = n.logged("compactor lease acquired").into_iter().next()?;
    let e = &l["epoch"];
    Some(e.as_u64().or_else(|| e.as_str()?.parse().ok()).unwrap_or(0))
}

/// Two compactors started together: one holds the lease, the other
/// waits; SIGKILL of the holder hands the lease over once it expires.
/// Needs `--role compact` (COMPACT's part of issue 14).
#[test]
fn two_compactors_one_lease() {
    let bucket = Bucket::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = compactor(&bucket, "c1", dirs[0].path());
    let b = compactor(&bucket, "c2", dirs[1].path());
    let mut nodes = [a, b];
    let holder = eventually(30, || nodes.iter().position(|n| acquired_epoch(n).is_some()));
    let first_epoch = acquired_epoch(&nodes[holder]).unwrap();
    // Several renewals and retries later, still only one has held it.
    std::thread::sleep(LEASE * 2 + LEASE_RETRY);
    let other = 1 - holder;
    assert_eq!(acquired_epoch(&nodes[other]), None, "both compactors acquired the lease");
    assert!(nodes[holder].logged("compactor lease lost").is_empty(), "the holder lost it while running");

    nodes[holder].kill();
    let killed = Instant::now();
    // The lease expires LEASE after its last renewal; the other takes it at
    // its next retry. The bound adds 5 s for process scheduling on a loaded
    // machine, not for anything the protocol allows.
    let bound = LEASE + LEASE_RETRY + Duration::from_secs(5);
    eventually(bound.as_secs() + 1, || acquired_epoch(&nodes[other]));
    let took = killed.elapsed();
    assert!(took <= bound, "taken over after {took:?}");
    let second_epoch = acquired_epoch(&nodes[other]).unwrap();
    assert!(second_epoch > first_epoch, "epochs {first_epoch} then {second_epoch}");
}

/// `v` with arrays sorted (by their JSON text) and the `metrics`
/// (timings) and `warnings` members dropped, recursively.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metrics" | "warnings" | "took_ms"))
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect(),
        ),
        Value::Array(a) => {
            let mut a: Vec<Value> = a.iter().map(normalize).collect();
            a.sort_by_key(|v| v.to_string());
            Value::Array(a)
        }
        v => v.clone(),
    }
}

/// A Jaeger answer with each span's `processID` (`p1`, `p2`: numbered in
/// the order the spans came) replaced by the process itself.
fn jaeger_normalized(v: &Value) -> Value {
    let mut v = v.clone();
    for t in v["data"].as_array_mut().into_iter().flatten() {
        let processes = t["processes"].take();
        for s in t["spans"].as_array_mut().into_iter().flatten() {
            let p = s["processID"].as_str().unwrap_or_default().to_string();
            s["processID"] = processes[&p].clone();
        }
    }
    normalize(&v)
}

/// The queries compared between the query node and a single node.
fn equivalence_queries(w: &Workload) -> Vec<String> {
    let (s, e) = (w.start_ns.to_string(), w.end_ns.to_string());
    let (s_us, e_us) = ((w.start_ns / 1000).to_string(), (w.end_ns / 1000).to_string());
    let range = |extra: &[(&str, &str)]| {
        let mut p = vec![("start", s.as_str()), ("end", e.as_str())];
        p.extend_from_slice(extra);
        query(&p)
    };
    vec![
        format!("/api/v1/search/traces?{}", range(&[("limit", "1000")])),
        format!("/api/v1/search/traces?{}", range(&[("service", "checkout"), ("limit", "1000")])),
        format!("/api/v1/search/traces?{}", range(&[("status", "error"), ("limit", "1000")])),
        format!(
            "/api/v1/search/traces?{}",
            range(&[("min_duration", "20ms"), ("sort", "duration"), ("limit", "50")])
        ),
        format!(
            "/jaeger/api/traces?{}",
            query(&[("service", "frontend"), ("start", &s_us), ("end", &e_us), ("limit", "1000")])
        ),
        format!("/api/v1/search/logs?{}", range(&[("limit", "5000")])),
        format!("/api/v1/search/logs?{}", range(&[("severity", "WARN"), ("limit", "5000")])),
        "/api/v1/services".to_string(),
        "/api/v1/services/checkout/operations".to_string(),
        format!("/api/v1/dependencies?{}", range(&[])),
        format!("/api/v1/metrics/red?{}", range(&[("step", "1m")])),
        format!("/api/v1/metrics/red?{}", range(&[("service", "frontend"), ("step", "1m")])),
    ]
}

fn assert_same_answers(q: &Node, one: &Node, w: &Workload, when: &str) {
    for path in equivalence_queries(w) {
        let a = q.get_ok(&path);
        let b = one.get_ok(&path);
        let (a, b) = if path.starts_with("/jaeger") {
            (jaeger_normalized(&a), jaeger_normalized(&b))
        } else {
            (normalize(&a), normalize(&b))
        };
        assert!(a == b, "{when}: {path}:\nquery node: {a}\nsingle node: {b}");
        // An empty answer would prove nothing.
        let n = |k: &str| a[k].as_array().map_or(0, Vec::len);
        let size = ["traces", "data", "logs", "services", "operations", "edges", "series"]
            .map(n)
            .iter()
            .sum::<usize>();
        assert!(size > 0, "{when}: {path}: empty: {a}");
    }
    let all =
        format!("/api/v1/search/traces?{}", query(&[("start", &w.start_ns.to_string()), ("limit", "1000")]));
    assert_eq!(
        q.get_ok(&all)["traces"].as_array().unwrap().len(),
        w.truth.len(),
        "{when}: every trace found"
    );
}

/// Search, log search, services, dependencies and RED answer the same
/// from the query node as from one `--role all` node with the same data,
/// before upload (heads) and after.
#[test]
fn query_node_answers_as_one_all_node() {
    equivalence(false);
}

/// The same after a compactor merged both ingest nodes' segments into
/// one. Needs `--role compact` (COMPACT's part of issue 14).
#[test]
fn query_node_answers_as_one_all_node_after_compaction() {
    equivalence(true);
}

fn equivalence(compact: bool) {
    let bucket = Bucket::start();
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let n1 = ingest(&bucket, "n1", dirs[0].path());
    let n2 = ingest(&bucket, "n2", dirs[1].path());
    let q = query_node(&bucket, dirs[2].path(), &[&n1, &n2]);
    let one = Node::spawn("all", dirs[3].path(), &[], INGEST_TOML, Vec::new());
    one.wait_ready();
    let w = Workload::generate(120);
    send_all(&w, &[&n1, &n2]);
    send_all(&w, &[&one]);
    assert_same_answers(&q, &one, &w, "before upload");
    n1.flush();
    n2.flush();
    one.flush();
    assert_same_answers(&q, &one, &w, "after upload");
    if compact {
        let segments = || q.get_ok("/api/v1/status")["segments"].as_u64().unwrap();
        let before = eventually(30, || (segments() >= 2).then(segments));
        let _c = compactor(&bucket, "c1", dirs[4].path());
        eventually(180, || (segments() < before).then_some(()));
        assert_same_answers(&q, &one, &w, "after compaction");
    }
}
