//! Segments in S3 through the whole binary: `--storage-url s3://...` with
//! the usual AWS variables, against moto in server mode started here.

use std::time::{Duration, SystemTime};

use skein_storage::testsuite::Moto;

use crate::sdk::{check_trace, send_checkout, Transport};
use crate::support::{query, Server};

#[test]
fn segments_in_s3_outlive_the_local_data_directory() {
    let moto = Moto::start();
    moto.create_bucket("skein-e2e");
    let env = [
        ("SKEIN_STORAGE_URL", "s3://skein-e2e/cluster-a"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let first = tempfile::tempdir().unwrap();
    let mut a = Server::start_with(first.path(), &env);
    let sent = send_checkout(&a, Transport::Grpc, SystemTime::now() - Duration::from_secs(60));
    check_trace(&a, &sent);
    a.flush();
    assert!(a.metric("skein_object_store_written_bytes") > 0.0, "segment uploaded");
    a.terminate();

    // Another node with an empty data directory: everything comes from the
    // bucket (indexes downloaded at start, rows fetched by range).
    let second = tempfile::tempdir().unwrap();
    let b = Server::start_with(second.path(), &env);
    check_trace(&b, &sent);
    assert!(b.metric("skein_object_store_read_bytes") > 0.0);
    let found = b.get_json("/api/v1/search/traces?service=cart&attr=cart.items=3");
    let ids: Vec<&str> =
        found["traces"].as_array().unwrap().iter().filter_map(|t| t["trace_id"].as_str()).collect();
    assert_eq!(ids, vec![sent.trace_id.as_str()]);
    let logs = b.get_json(&format!("/api/v1/search/logs?{}", query(&[("q", "checkout alice")])));
    assert_eq!(logs["logs"].as_array().unwrap().len(), 1);

    // A bucket that does not exist is a clear error at start, not a panic.
    let third = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::skein_bin())
        .args(["serve", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--zipkin-addr", "127.0.0.1:0"])
        .args(["--storage-url", "s3://no-such-bucket/x", "--data-dir"])
        .arg(third.path())
        .envs(env.iter().filter(|(k, _)| *k != "SKEIN_STORAGE_URL").copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-bucket") || err.contains("NoSuchBucket"), "{err}");
}
