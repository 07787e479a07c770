//! Alerting end to end: an error-rate rule over spans sent by OTLP/HTTP
//! fires once to a webhook receiver this test serves (with the link to the
//! UI search), does not fire again after a SIGTERM and a restart on the
//! same data directory, and is resolved once the errors leave its window.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Status};
use prost::Message as _;
use serde_json::Value;

use crate::support::{eventually, otlp, Server};

type Got = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1:0 (axum, on its own runtime thread)
/// that keeps every JSON body posted to `/hook`.
fn webhook_receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let g = g.clone();
                    async move {
                        g.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        "ok"
                    }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (format!("http://{}/hook", rx.recv().unwrap()), got)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Sends one failed SERVER span of `checkout`, now.
fn send_error(s: &Server, n: u64) {
    let t = now_ns();
    let mut trace = [7u8; 16];
    trace[..8].copy_from_slice(&n.to_be_bytes());
    let mut sp = otlp::span(trace, n + 1, None, "POST /checkout", t - 5_000_000, t);
    sp.status = Some(Status { code: StatusCode::Error as i32, message: "boom".into() });
    let body = otlp::traces("checkout", vec![sp]).encode_to_vec();
    let (st, _) = otlp::post(&s.otlp_http, "/v1/traces", body).unwrap();
    assert_eq!(st, 200);
}

/// The statuses of the notifications received so far.
fn statuses(got: &Got) -> Vec<String> {
    got.lock().unwrap().iter().map(|v| v["status"].as_str().unwrap_or("?").to_string()).collect()
}

/// The rule's entry of `/api/v1/alerts`.
fn rule(s: &Server) -> Value {
    s.get_json("/api/v1/alerts")["rules"][0].clone()
}

/// Sends errors until the rule has been evaluated `n` more times, each
/// evaluation seeing them.
fn errors_for_evaluations(s: &Server, sent: &mut u64, n: usize) {
    let mut seen = Vec::new();
    eventually(60, || {
        *sent += 1;
        send_error(s, *sent);
        let r = rule(s);
        if let Some(t) = r["last_evaluation"].as_str() {
            if !seen.contains(&t.to_string()) {
                seen.push(t.to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        (seen.len() > n).then_some(())
    });
}

#[test]
fn an_error_rate_alert_fires_once_across_a_restart_and_resolves() {
    let (hook, got) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("skein.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerts]\nevaluation_interval = \"300ms\"\n\
             [[alerts.rules]]\nname = \"checkout errors\"\nkind = \"error_rate\"\nservice = \"checkout\"\n\
             threshold = 0.5\nwindow = \"1s\"\nfor = \"600ms\"\n\
             labels = {{ severity = \"page\" }}\nannotations = {{ summary = \"checkout fails\" }}\n\
             [[alerts.receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start_with(&data, &[("SKEIN_CONFIG", cfg.to_str().unwrap())]);
    assert_eq!(rule(&s)["name"], "checkout errors");

    // Errors until the alert fires: one notification, with the link.
    let mut sent = 0;
    eventually(60, || {
        sent += 1;
        send_error(&s, sent);
        std::thread::sleep(Duration::from_millis(100));
        (!got.lock().unwrap().is_empty()).then_some(())
    });
    {
        let g = got.lock().unwrap();
        assert_eq!(g[0]["status"], "firing", "{g:?}");
        let a = &g[0]["alerts"][0];
        assert_eq!(a["labels"]["alertname"], "checkout errors");
        assert_eq!(a["labels"]["severity"], "page");
        assert_eq!(a["annotations"]["summary"], "checkout fails");
        let link = a["generatorURL"].as_str().unwrap();
        let want = format!("http://{}/search?service=checkout&status=error&start=", s.http);
        assert!(link.starts_with(&want), "{link}");
    }
    assert_eq!(rule(&s)["state"], "firing");

    // The rules' window is whole minutes (the rollups'): restart away from
    // a minute's end, so the errors sent before it are still in the window
    // the first evaluation after it reads.
    while (now_ns() / 1_000_000_000) % 60 > 45 {
        std::thread::sleep(Duration::from_millis(200));
    }
    s.terminate();
    s.restart();
    errors_for_evaluations(&s, &mut sent, 3);
    let r = rule(&s);
    assert_eq!(r["state"], "firing", "{r}");
    assert_eq!(statuses(&got), ["firing"], "a restart does not fire again");

    // No more errors: once they leave the window the alert is resolved.
    eventually(150, || (statuses(&got).len() > 1).then_some(()));
    assert_eq!(statuses(&got), ["firing", "resolved"]);
    let g = got.lock().unwrap();
    assert!(g[1]["alerts"][0]["endsAt"].as_str().unwrap().starts_with("20"), "{:?}", g[1]);
    assert_eq!(rule(&s)["state"], "inactive");
}
