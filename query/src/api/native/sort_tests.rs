//! `sort=start|duration` on `/api/v1/search/traces`, through the router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::engine::testutil::{append, storage, three_traces};
use crate::{router, ApiState, QueryConfig};

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let r = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["traces"].as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap()[..2].to_string()).collect()
}

#[tokio::test]
async fn sort_duration_returns_the_longest_traces_of_the_range() {
    let (_d, s) = storage();
    append(&s, three_traces()).await;
    s.flush(true).unwrap();
    let app = router(ApiState::new(
        skein_storage::tenant::Tenants::from_storage(s.clone()),
        Default::default(),
        QueryConfig::default(),
    ));
    // trace 1 (300 ms) is the oldest: not in the newest page of 2
    let (st, v) = get(&app, "/api/v1/search/traces?limit=2").await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec!["03".into(), "02".into()]));
    let (st, v) = get(&app, "/api/v1/search/traces?limit=2&sort=start").await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec!["03".into(), "02".into()]));
    let (st, v) = get(&app, "/api/v1/search/traces?limit=2&sort=duration").await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec!["01".into(), "03".into()]), "{v}");
    assert_eq!(v["traces"][0]["duration_ns"], 300_000_000);
    let (st, v) = get(&app, "/api/v1/search/traces?sort=slowest").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("duration"), "{v}");
}
