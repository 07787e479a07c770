//! The evaluator over a real storage: states across a restart (a new
//! [`Alerts`] over the same state file), deliveries to a receiver the
//! test serves, retries, and `/api/v1/alerts`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use skein_storage::model::kind;
use skein_storage::tenant::Tenants;
use tower::ServiceExt as _;

use super::*;
use crate::engine::testutil::{append, span, storage};
use crate::QueryConfig;

const S: u64 = 1_000_000_000;
/// Evaluations happen at "now" = 10 min, spans are at 9 min.
const NOW: u64 = 600 * S;

/// A receiver on 127.0.0.1:0 that keeps every body it is posted (and
/// answers `status`).
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let g = got.clone();
    let app = Router::new().route(
        "/{*path}",
        axum::routing::post(move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock().push((uri.path().to_string(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
                status
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

/// Spans of `pay`: `n` SERVER roots at 9 min, `errors` of them failed, each
/// 200 ms.
fn pay_spans(n: u8, errors: u8) -> Vec<skein_storage::model::Span> {
    (0..n)
        .map(|i| {
            let mut s =
                span(i + 1, 1, None, "pay", "POST /pay", 540 * S + u64::from(i), 200_000_000, i < errors);
            s.kind = kind::SERVER;
            s
        })
        .collect()
}

fn config(text: &str) -> AlertsConfig {
    toml::from_str(text).unwrap()
}

fn alerts(api: &ApiState, dir: &std::path::Path, text: &str) -> Arc<Alerts> {
    Alerts::new(
        config(text),
        false,
        api.clone(),
        StateFile::new(dir, "alerts.json"),
        "http://skein:16686/",
        AlertMetrics::default(),
    )
    .unwrap()
}

fn api(s: &Arc<skein_storage::Storage>) -> ApiState {
    ApiState::new(Tenants::from_storage(s.clone()), Registry::default(), QueryConfig::default())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let r = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The three kinds compute their values from one storage.
#[tokio::test]
async fn the_three_kinds_measure() {
    let (_d, s) = storage();
    append(&s, pay_spans(4, 1)).await;
    let e = crate::engine::testutil::engine(&s);
    let rule =
        |text: &str| -> Rule { toml::from_str::<RuleConfig>(text).unwrap().check(0, &[], false).unwrap() };
    let rate = rule("name = \"r\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.1");
    assert_eq!(rate.evaluate(&e, NOW).await.unwrap(), Some(0.25));
    let none = rule("name = \"r\"\nkind = \"error_rate\"\nservice = \"nobody\"\nthreshold = 0.1");
    assert_eq!(none.evaluate(&e, NOW).await.unwrap(), None, "no requests: no value");
    let old =
        rule("name = \"r\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.1\nwindow = \"1m\"");
    assert_eq!(old.evaluate(&e, NOW + 120 * S).await.unwrap(), None, "out of the window");
    let lat = rule("name = \"l\"\nkind = \"latency\"\nservice = \"pay\"\noperation = \"POST /pay\"\nthreshold = \"100ms\"");
    let v = lat.evaluate(&e, NOW).await.unwrap().unwrap();
    assert!((0.19..=0.21).contains(&v), "{v}");
    let count = rule("name = \"c\"\nkind = \"traceql_count\"\nquery = \"{ status = error }\"\nthreshold = 0");
    assert_eq!(count.evaluate(&e, NOW).await.unwrap(), Some(1.0));
    s.flush(true).unwrap();
    assert_eq!(rate.evaluate(&e, NOW).await.unwrap(), Some(0.25), "from segments alike");
    assert_eq!(count.evaluate(&e, NOW).await.unwrap(), Some(1.0));
}

/// Fires once with the link, neither fires again nor forgets across a
/// restart (a new `Alerts` on the same file), and is resolved once the
/// errors leave the window; a pending alert keeps its `active_at`.
#[tokio::test]
async fn fires_once_across_a_restart_then_resolves() {
    let (_d, s) = storage();
    append(&s, pay_spans(4, 2)).await;
    let (url, got) = receiver(StatusCode::OK).await;
    let state_dir = tempfile::tempdir().unwrap();
    let text = format!(
        "evaluation_interval = \"1s\"\n\
         [[rules]]\nname = \"pay errors\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.1\nwindow = \"5m\"\nfor = \"30s\"\nlabels = {{ severity = \"page\" }}\n\
         [[rules]]\nname = \"slow\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.1\nfor = \"1h\"\n\
         [[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\n"
    );
    let api = api(&s);
    let a = alerts(&api, state_dir.path(), &text);
    a.round(NOW).await;
    let app = router(a.clone());
    let (st, v) = get(&app, "/api/v1/alerts").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["rules"][0]["state"], "pending");
    // As every native endpoint: a parameter is a 400, another method a
    // 405 with an error body and Allow.
    let (bad, e) = get(&app, "/api/v1/alerts?state=firing").await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("unknown parameter \"state\""), "{e}");
    let r = app.clone().oneshot(Request::post("/api/v1/alerts").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    let body: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("does not take POST"), "{body}");
    assert_eq!(v["rules"][0]["active_at"], NOW.to_string());
    assert_eq!(v["rules"][0]["value"], 0.5);
    assert_eq!(v["rules"][0]["health"], "ok");
    assert!(got.lock().is_empty(), "pending notifies nobody");
    a.round(NOW + 30 * S).await;
    {
        let g = got.lock();
        assert_eq!(g.len(), 1);
        let (path, body) = &g[0];
        assert_eq!(path, "/hook");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["alerts"][0]["labels"]["alertname"], "pay errors");
        assert_eq!(body["alerts"][0]["labels"]["severity"], "page");
        let link = body["alerts"][0]["generatorURL"].as_str().unwrap();
        assert!(link.starts_with("http://skein:16686/search?service=pay&status=error&start="), "{link}");
    }
    drop(a);

    // Restart: the state file says firing, and pending since NOW.
    let a = alerts(&api, state_dir.path(), &text);
    a.round(NOW + 40 * S).await;
    assert_eq!(got.lock().len(), 1, "no second firing notification");
    let (_, v) = get(&router(a.clone()), "/api/v1/alerts").await;
    assert_eq!(v["rules"][0]["state"], "firing");
    assert_eq!(v["rules"][1]["state"], "pending");
    assert_eq!(v["rules"][1]["active_at"], NOW.to_string(), "a pending alert keeps its active_at");
    drop(a);

    // Resolved while "down": the first evaluation after the start tells.
    let a = alerts(&api, state_dir.path(), &text);
    a.round(NOW + 3600 * S).await;
    let g = got.lock();
    assert_eq!(g.len(), 2);
    assert_eq!(g[1].1["status"], "resolved");
    assert_eq!(g[1].1["alerts"][0]["endsAt"], notify::rfc3339(NOW + 3600 * S));
}

/// A receiver that fails is tried again at later rounds, after a backoff,
/// and the notification is kept across a restart until delivered; the
/// counters say what happened.
#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff() {
    let (_d, s) = storage();
    append(&s, pay_spans(2, 2)).await;
    let (bad, bad_got) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let state_dir = tempfile::tempdir().unwrap();
    let text = |url: &str| {
        format!(
            "evaluation_interval = \"10s\"\n\
             [[rules]]\nname = \"e\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.5\n\
             [[receivers]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{url}\"\n\
             [[receivers]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{url}/slack\"\n"
        )
    };
    let api = api(&s);
    let mut reg = Registry::default();
    let m = AlertMetrics::register(&mut reg);
    let a = Alerts::new(
        config(&text(&bad)),
        false,
        api.clone(),
        StateFile::new(state_dir.path(), "alerts.json"),
        "http://x",
        m,
    )
    .unwrap();
    a.round(NOW).await;
    assert_eq!(bad_got.lock().len(), 2, "one try per receiver");
    a.round(NOW + 5 * S).await;
    assert_eq!(bad_got.lock().len(), 2, "not before the backoff");
    a.round(NOW + 10 * S).await;
    assert_eq!(bad_got.lock().len(), 4);
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &reg).unwrap();
    assert!(
        metrics.contains("skein_alert_notifications_total{receiver=\"am\",outcome=\"failed\"} 2"),
        "{metrics}"
    );
    let (_, v) = get(&router(a.clone()), "/api/v1/alerts").await;
    assert_eq!(v["rules"][0]["undelivered_notifications"], 2);
    drop(a);

    // The receiver recovers; after a restart the kept notifications go.
    let (good, got) = receiver(StatusCode::OK).await;
    let a = alerts(&api, state_dir.path(), &text(&good));
    a.round(NOW + 60 * S).await;
    let g = got.lock();
    let paths: Vec<&str> = g.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/api/v2/alerts", "/slack"]);
    assert!(g[0].1[0]["endsAt"].is_string(), "alertmanager alerts carry an endsAt");
    assert!(g[1].1["text"].as_str().unwrap().starts_with("[FIRING] e fires"));
}

/// A receiver gets its notifications in order: a resolved notification
/// that is due waits behind the firing one still waiting for its retry,
/// and both go, in order, once the firing one is due again.
#[tokio::test]
async fn a_receiver_gets_its_notifications_in_order() {
    let (_d, s) = storage();
    append(&s, pay_spans(2, 2)).await;
    let status = Arc::new(std::sync::atomic::AtomicU16::new(503));
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (st, g) = (status.clone(), got.clone());
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (st, g) = (st.clone(), g.clone());
            async move {
                let code = st.load(std::sync::atomic::Ordering::SeqCst);
                if code == 200 {
                    g.lock().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                }
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let state_dir = tempfile::tempdir().unwrap();
    let a = alerts(
        &api(&s),
        state_dir.path(),
        &format!(
            "evaluation_interval = \"10s\"\nmax_backoff = \"1h\"\nmax_attempts = 100\n\
             [[rules]]\nname = \"e\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.5\n\
             [[receivers]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\n"
        ),
    );
    // Fails at 0, 10, 30, 70, 150 and 310 s: the next try is at 630 s.
    for t in [0, 10, 30, 70, 150, 310] {
        a.round(NOW + t * S).await;
    }
    status.store(200, std::sync::atomic::Ordering::SeqCst);
    // The errors have left the window: resolved, due now, but held back.
    a.round(NOW + 400 * S).await;
    assert!(got.lock().is_empty(), "nothing overtakes the waiting firing notification");
    a.round(NOW + 630 * S).await;
    let statuses: Vec<Value> = got.lock().iter().map(|v| v["status"].clone()).collect();
    assert_eq!(statuses, [Value::from("firing"), Value::from("resolved")]);
}

/// With multitenancy a rule reads its own tenant and is listed only to it.
#[tokio::test]
async fn rules_are_per_tenant() {
    let (_d, s) = storage();
    let state_dir = tempfile::tempdir().unwrap();
    let cfg = config("[[rules]]\nname = \"e\"\nkind = \"error_rate\"\nservice = \"pay\"\nthreshold = 0.5\ntenant = \"acme\"\n");
    let a = Alerts::new(
        cfg,
        true,
        api(&s),
        StateFile::new(state_dir.path(), "a.json"),
        "http://x",
        AlertMetrics::default(),
    )
    .unwrap();
    let app = router(a.clone());
    let (_, v) = get(&app, "/api/v1/alerts").await;
    assert_eq!(v["rules"].as_array().unwrap().len(), 0, "single-tenant sees none");
    let r = app
        .clone()
        .oneshot(
            Request::get("/api/v1/alerts")
                .extension(skein_storage::tenant::TenantId::parse("acme").unwrap())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["rules"][0]["name"], "e");
    assert_eq!(v["rules"][0]["health"], "unknown");
    assert_eq!(v["rules"][0]["state"], "inactive");
    // Duplicates and a corrupt state file are start-up errors.
    let dup = config("[[rules]]\nname = \"e\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\n[[rules]]\nname = \"e\"\nkind = \"error_rate\"\nservice = \"b\"\nthreshold = 1\n");
    assert!(dup.check(false).unwrap_err().contains("alert rule \"e\": name"));
    for bad in ["not a url", "ftp://x", "http://"] {
        let c = config(&format!("external_url = \"{bad}\"\n"));
        assert!(c.check(false).unwrap_err().contains("alerts.external_url"), "{bad}");
    }
    assert!(config("external_url = \"https://skein.example.com/base\"\n").check(false).is_ok());
    std::fs::write(state_dir.path().join("bad.json"), b"{").unwrap();
    let e = Alerts::new(
        AlertsConfig::default(),
        false,
        api(&s),
        StateFile::new(state_dir.path(), "bad.json"),
        "",
        AlertMetrics::default(),
    )
    .unwrap_err();
    assert!(e.contains("move it aside"), "{e}");
}
