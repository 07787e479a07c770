use std::time::SystemTime;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use prost::Message as _;

use crate::sdk::unix_ns;
use crate::support::{otlp, Server};

fn int_kv(k: String, i: i64) -> KeyValue {
    KeyValue {
        key: k,
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(i)) }),
        ..Default::default()
    }
}

/// Issue 10 item 8: a span with a million attributes and a 15 MiB value
/// is stored with the first 128 attributes and the value cut to 64 KiB,
/// its events cut to the configured count, all counted by signal and
/// limit; the request is accepted whole (no partial_success) and the other
/// span of its batch is stored as sent.
#[test]
fn hostile_content_is_stored_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        "[collector]\nmax_request_bytes = 50331648\n\n[collector.limits]\nmax_events_per_span = 2\n",
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    let now = unix_ns(SystemTime::now());
    let trace = [7u8; 16];
    let mut hostile = otlp::span(trace, 1, None, "hostile", now, now + 1_000);
    hostile.attributes.push(otlp::kv("big", &"x".repeat(15 << 20)));
    hostile.attributes.extend((0..1_000_000).map(|i| int_kv(format!("k{i}"), i)));
    hostile.events = (0..5).map(|i| Event { name: format!("e{i}"), ..Default::default() }).collect();
    let mut fine = otlp::span(trace, 2, Some(1), "fine", now + 10, now + 500);
    fine.attributes = (0..3).map(|i| int_kv(format!("f{i}"), i)).collect();
    let body = otlp::traces("svc", vec![hostile, fine]).encode_to_vec();
    assert!(body.len() > 15 << 20);
    let (status, resp) = otlp::post(&server.otlp_http, "/v1/traces", body).unwrap();
    assert_eq!(status, 200);
    assert!(resp.is_empty(), "no partial_success: nothing was rejected");

    let v = server.get_json(&format!("/api/v1/traces/{}", hex::encode(trace)));
    let spans = v["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let by_name = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap();
    let h = by_name("hostile");
    let attrs = h["attributes"].as_object().unwrap();
    assert_eq!(attrs.len(), 128);
    assert_eq!(attrs["big"].as_str().unwrap().len(), 64 << 10);
    assert!(attrs.contains_key("k126") && !attrs.contains_key("k127"));
    assert_eq!(h["events"].as_array().unwrap().len(), 2);
    assert_eq!(by_name("fine")["attributes"].as_object().unwrap().len(), 3);

    let m =
        |limit: &str| server.metric(&format!("skein_limited_total{{signal=\"spans\",limit=\"{limit}\"}}"));
    assert_eq!(m("attributes"), (1_000_001 - 128) as f64);
    assert_eq!(m("value_length"), 1.0);
    assert_eq!(m("events"), 3.0);
    assert_eq!(m("links"), 0.0);
    assert_eq!(server.metric("skein_stored_records_total{signal=\"spans\""), 2.0);
}
