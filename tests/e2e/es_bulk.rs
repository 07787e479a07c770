//! The Elasticsearch bulk API on the OTLP/HTTP listener with real clients:
//! the Python `elasticsearch` client's `helpers.bulk`, and the exact
//! bodies that Fluentd's, Logstash's and Fluent Bit's Elasticsearch
//! outputs send, read back through the log search API.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{client, eventually, Server};

/// Runs `script` with the Python client, failing clearly when it is not
/// installed (scripts/test.sh installs it).
fn python(script: &str, args: &[&str]) -> Value {
    let check = Command::new("python3").args(["-c", "import elasticsearch"]).output().expect("run python3");
    assert!(
        check.status.success(),
        "the Python elasticsearch client is missing: pip install 'elasticsearch==8.17.2' (scripts/test.sh does)"
    );
    let out =
        Command::new("timeout").arg("120").arg("python3").arg("-c").arg(script).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Log records of `service`, once there are `n`.
fn logs_of(server: &Server, service: &str, n: usize) -> Vec<Value> {
    eventually(20, || {
        let v = server.get_json(&format!("/api/v1/search/logs?service={service}&limit=1000"));
        let logs = v["logs"].as_array()?.clone();
        (logs.len() == n).then_some(logs)
    })
}

fn attr<'a>(log: &'a Value, key: &str) -> Option<&'a Value> {
    let a = &log["attributes"];
    a.get(key).or_else(|| a.as_array()?.iter().find(|kv| kv["key"] == key).map(|kv| &kv["value"]))
}

const HELPERS_BULK: &str = r#"
import json, sys
from datetime import datetime, timezone
from elasticsearch import Elasticsearch, helpers

es = Elasticsearch(sys.argv[1], request_timeout=30)
info = es.info()
now = datetime.now(timezone.utc).isoformat()
docs = ({"_index": "py-logs", "_source": {
            "@timestamp": now, "message": f"python line {i}", "level": "warning",
            "service": {"name": "py-svc"}, "trace_id": "5b8efff798038103d269b633813fc60c",
            "labels": {"n": i}}} for i in range(120))
ok, errors = helpers.bulk(es, docs, chunk_size=50)
mixed = [
    {"_index": "py-logs", "_source": {"@timestamp": "not a date", "message": "bad time"}},
    {"_op_type": "create", "_index": "py-logs", "_source": {"message": "created", "service": "py-svc"}},
    {"_op_type": "delete", "_index": "py-logs", "_id": "1"},
]
ok2, errs = helpers.bulk(es, mixed, raise_on_error=False)
try:
    es.bulk(operations="{\"upsert\":{}}\n{}\n", index="py-logs")
    bad = None
except Exception as e:
    bad = {"status": getattr(e, "status_code", getattr(e, "meta", None) and e.meta.status), "type": type(e).__name__}
print(json.dumps({"version": info["version"]["number"], "ok": ok, "errors": errors,
                  "ok2": ok2, "errs": errs, "bad": bad}))
"#;

/// The Python client 8.x (which refuses a server without the product
/// header) checks the node, bulk-loads in chunks, and gets per-item
/// errors for the bad items while the good ones are stored; a malformed
/// body is an error for the whole request.
#[test]
fn python_client_helpers_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = python(HELPERS_BULK, &[&format!("http://{}/es", server.otlp_http)]);
    assert!(out["version"].as_str().unwrap().starts_with("8."), "{out}");
    assert_eq!(out["ok"], 120, "{out}");
    assert_eq!(out["errors"], serde_json::json!([]));
    assert_eq!(out["ok2"], 1, "{out}");
    let errs = out["errs"].as_array().unwrap();
    assert_eq!(errs.len(), 2, "{out}");
    assert_eq!(errs[0]["index"]["status"], 400);
    assert_eq!(errs[0]["index"]["error"]["type"], "document_parsing_exception");
    assert_eq!(errs[1]["delete"]["status"], 400);
    assert_eq!(out["bad"]["status"], 400, "{out}");

    let logs = logs_of(&server, "py-svc", 121);
    let l = logs.iter().find(|l| l["body"] == "python line 7").unwrap_or_else(|| panic!("{:?}", logs[0]));
    assert_eq!(l["severity_text"], "warning");
    assert_eq!(l["severity_number"], 13);
    assert_eq!(l["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(attr(l, "labels.n"), Some(&Value::from(7)), "{l}");
    assert_eq!(attr(l, "elasticsearch.index"), Some(&Value::from("py-logs")), "{l}");
    assert!(logs.iter().any(|l| l["body"] == "created"));
    assert!(!logs.iter().any(|l| l["body"] == "bad time"));
}

/// `t` as `YYYY-MM-DDThh:mm:ss.fff…` with `digits` fraction digits, in UTC.
fn timestamp(t: SystemTime, digits: usize) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128).unwrap();
    let frac = format!("{:09}", dt.nanosecond());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{}",
        dt.year(),
        dt.month() as u8,
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        &frac[..digits]
    )
}

/// Posts `body` as a shipper does and answers the status and JSON.
fn post(
    server: &Server,
    path: &str,
    content_type: &str,
    body: String,
    auth: Option<&str>,
) -> (u16, Value, bool) {
    let mut req = client()
        .post(format!("http://{}{path}", server.otlp_http))
        .header("content-type", content_type)
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().unwrap();
    let product = r.headers().get("x-elastic-product").is_some_and(|v| v == "Elasticsearch");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null), product)
}

/// The bodies the three shippers' stock outputs send, byte for byte in
/// their shape, each read back with its fields where they belong.
#[test]
fn shipper_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let now = SystemTime::now() - Duration::from_secs(5);
    // Logstash and Fluent Bit write milliseconds and `Z`.
    let ms_ts = format!("{}Z", timestamp(now, 3));
    let millis = now.duration_since(UNIX_EPOCH).unwrap().as_millis();

    // Fluentd, fluent-plugin-elasticsearch (uken/fluent-plugin-elasticsearch,
    // lib/fluent/plugin/out_elasticsearch.rb): the action is
    // `{"index":{"_index":...}}` (no `_type` against 8.x), the record as
    // the pipeline made it, and with `logstash_format true` an index
    // `logstash-%Y.%m.%d` and `@timestamp` in ISO 8601 with
    // `time_precision` 9 digits and a numeric offset. Content type
    // application/json (the plugin's `content_type` default). This record
    // is in_tail of a container log after the kubernetes_metadata filter.
    let fluentd_ts = format!("{}+00:00", timestamp(now, 9));
    let fluentd = format!(
        concat!(
            r#"{{"index":{{"_index":"logstash-2026.11.30"}}}}"#,
            "\n",
            r#"{{"log":"GET /cart 200 12ms\n","stream":"stdout","docker":{{"container_id":"0f3e"}},"kubernetes":{{"container_name":"web","namespace_name":"shop","pod_name":"web-7d9f","labels":{{"app":"fluentd-web"}},"host":"node-1"}},"@timestamp":"{ts}"}}"#,
            "\n"
        ),
        ts = fluentd_ts
    );
    let (st, v, product) = post(&server, "/es/_bulk", "application/json", fluentd, None);
    assert_eq!((st, &v["errors"], product), (200, &Value::Bool(false), true), "{v}");
    assert_eq!(v["items"][0]["index"]["status"], 201);
    let logs = logs_of(&server, "fluentd-web", 1);
    let l = &logs[0];
    assert_eq!(l["body"], "GET /cart 200 12ms\n");
    assert_eq!(attr(l, "kubernetes.pod_name"), Some(&Value::from("web-7d9f")));
    assert_eq!(attr(l, "kubernetes.labels.app"), Some(&Value::from("fluentd-web")));
    assert_eq!(attr(l, "stream"), Some(&Value::from("stdout")));
    assert_eq!(attr(l, "elasticsearch.index"), Some(&Value::from("logstash-2026.11.30")));

    // Logstash, logstash-output-elasticsearch
    // (lib/logstash/plugin_mixins/elasticsearch/common.rb,
    // `common_event_params`): the action's `_id` and `routing` are written
    // even when null; the document is the event (`@timestamp` in
    // milliseconds with `Z`, `@version`, ECS `host`, `log`, `event`).
    // Content type application/json. Sent to `/{index}/_bulk` here to
    // cover the path form; the line's `_index` wins.
    let logstash = format!(
        concat!(
            r#"{{"index":{{"_id":null,"_index":"logstash-app","routing":null}}}}"#,
            "\n",
            r#"{{"@timestamp":"{ts}","@version":"1","message":"order 42 failed: card declined","host":{{"name":"app-1"}},"log":{{"file":{{"path":"/var/log/app.log"}},"level":"ERROR"}},"service":{{"name":"logstash-app"}},"trace":{{"id":"4bf92f3577b34da6a3ce929d0e0e4736"}},"span":{{"id":"00f067aa0ba902b7"}},"event":{{"original":"order 42 failed: card declined"}}}}"#,
            "\n"
        ),
        ts = ms_ts
    );
    let (st, v, _) = post(&server, "/es/ignored-index/_bulk", "application/json", logstash, None);
    assert_eq!((st, &v["errors"]), (200, &Value::Bool(false)), "{v}");
    assert_eq!(v["items"][0]["index"]["_index"], "logstash-app");
    let logs = logs_of(&server, "logstash-app", 1);
    let l = &logs[0];
    assert_eq!(l["body"], "order 42 failed: card declined");
    assert_eq!((&l["severity_text"], &l["severity_number"]), (&Value::from("ERROR"), &Value::from(17)));
    assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(l["span_id"], "00f067aa0ba902b7");
    assert_eq!(attr(l, "host.name"), Some(&Value::from("app-1")));
    assert_eq!(attr(l, "log.file.path"), Some(&Value::from("/var/log/app.log")));
    let found =
        server.get_json(&format!("/api/v1/search/logs?trace_id={}", "4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(found["logs"].as_array().unwrap().len(), 1, "{found}");

    // Fluent Bit, out_es (fluent/fluent-bit plugins/out_es/es_bulk.h,
    // ES_BULK_INDEX_FMT): `{"create":{"_index":...,"_type":"_doc"}}`
    // (`Write_Operation create`, `Type _doc`, index `fluent-bit`), the
    // record with `@timestamp` (`Time_Key`) in milliseconds and `Z`, sent
    // as application/x-ndjson. Two records, one with a time in epoch
    // milliseconds from a `time` field a parser left.
    let fluent_bit = format!(
        concat!(
            r#"{{"create":{{"_index":"fluent-bit","_type":"_doc"}}}}"#,
            "\n",
            r#"{{"@timestamp":"{ts}","log":"worker started","level":"info","kubernetes":{{"labels":{{"app":"fluent-bit-app"}}}}}}"#,
            "\n",
            r#"{{"create":{{"_index":"fluent-bit","_type":"_doc"}}}}"#,
            "\n",
            r#"{{"time":{millis},"log":"queue drained","level":"debug","kubernetes":{{"labels":{{"app":"fluent-bit-app"}}}}}}"#,
            "\n"
        ),
        ts = ms_ts,
        millis = millis
    );
    let (st, v, _) = post(&server, "/es/_bulk", "application/x-ndjson", fluent_bit, None);
    assert_eq!((st, &v["errors"]), (200, &Value::Bool(false)), "{v}");
    assert_eq!(v["items"][1]["create"]["status"], 201);
    let logs = logs_of(&server, "fluent-bit-app", 2);
    let drained = logs.iter().find(|l| l["body"] == "queue drained").unwrap();
    assert_eq!(drained["severity_number"], 5);
    let want_ns = (millis * 1_000_000).to_string();
    assert_eq!(drained["time_unix_nano"].as_str(), Some(want_ns.as_str()), "{drained}");

    // Bad input on each endpoint: clear, Elasticsearch-shaped, nothing stored.
    let before = server.get_json("/api/v1/search/logs?limit=1000")["logs"].as_array().unwrap().len();
    for (path, ct, body, status) in [
        (
            "/es/_bulk",
            "application/x-ndjson",
            "{\"index\":{\"_index\":\"x\"}}\n{\"message\":\"m\"}\n{oops}\n{}\n",
            400,
        ),
        ("/es/_bulk", "text/plain", "{\"index\":{\"_index\":\"x\"}}\n{}\n", 415),
        ("/es/Upper/_bulk", "application/x-ndjson", "{\"index\":{}}\n{}\n", 400),
        ("/es/_bulk", "application/x-ndjson", "{\"index\":{}}\n{\"message\":\"no index\"}\n", 400),
    ] {
        let (st, v, product) = post(&server, path, ct, body.to_string(), None);
        assert_eq!(st, status, "{path} {body:?}: {v}");
        assert!(product, "{path}");
        assert_eq!(v["status"], status);
        assert!(v["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    }
    let after = server.get_json("/api/v1/search/logs?limit=1000")["logs"].as_array().unwrap().len();
    assert_eq!(before, after);
}

/// The ingest token guards the bulk API and its probes like OTLP/HTTP:
/// refusals are 401 in Elasticsearch's envelope with the product header;
/// with the token, the documents go to the token's tenant.
#[test]
fn token_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        r#"
multitenancy_enabled = true
[[auth.tokens]]
token = "team-a-ingest"
scopes = ["ingest", "query"]
tenant = "a"
"#,
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let body = "{\"index\":{\"_index\":\"t\"}}\n{\"message\":\"tenant line\",\"service\":\"tenant-svc\"}\n";
    let (st, v, product) = post(&server, "/es/_bulk", "application/x-ndjson", body.into(), None);
    assert_eq!((st, product), (401, true), "{v}");
    assert_eq!(v["error"]["type"], "security_exception");
    let (st, v, _) = post(&server, "/es/_bulk", "application/x-ndjson", body.into(), Some("Bearer wrong"));
    assert_eq!(st, 401, "{v}");
    let r = client().get(format!("http://{}/es/", server.otlp_http)).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (st, v, _) =
        post(&server, "/es/_bulk", "application/x-ndjson", body.into(), Some("Bearer team-a-ingest"));
    assert_eq!((st, &v["errors"]), (200, &Value::Bool(false)), "{v}");
    // Fluent Bit's and Logstash's outputs send a user and password: the
    // token is the password ("fluent-bit:team-a-ingest").
    let basic = Some("Basic Zmx1ZW50LWJpdDp0ZWFtLWEtaW5nZXN0");
    let (st, v, _) = post(&server, "/es/_bulk", "application/x-ndjson", body.into(), basic);
    assert_eq!((st, &v["errors"]), (200, &Value::Bool(false)), "{v}");
    let found = eventually(20, || {
        let (st, v) = server
            .api_with("/api/v1/search/logs?service=tenant-svc", &[("authorization", "Bearer team-a-ingest")]);
        (st == 200 && v["logs"].as_array()?.len() == 2).then_some(v)
    });
    assert_eq!(found["logs"][0]["body"], "tenant line");
}
