//! The compact role (`--role compact`, issue 14): one process that polls
//! the bucket's catalog as a query node does and, only while it holds the
//! compactor lease (`skein_storage::lease`), compacts and expires the
//! segments of every node's prefix (`skein_storage::cluster_compact`).
//! It has no WAL, no head and no ingest listener; its HTTP listener serves
//! `/healthz`, `/readyz` and `/metrics` only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skein_storage::lease::{self, Lease, LeaseKeeper};
use skein_storage::tenant::Tenants;
use skein_storage::CompactionConfig;
use tokio::sync::watch;

/// Registers `skein_compactor_lease_held` (1 while this node holds the
/// compactor lease, else 0) and returns it.
pub(crate) fn register(r: &mut Registry) -> Gauge {
    let g = Gauge::default();
    r.register(
        "skein_compactor_lease_held",
        "1 while this compactor holds the compactor lease (and may compact and delete), else 0",
        g.clone(),
    );
    g
}

/// Checks that the bucket's store refuses competing conditional puts
/// (`lease::verify_conditional_put`, on a probe object of this node), then
/// starts trying to take the lease as `node_id`.
///
/// # Errors
/// No object store, or one without conditional puts (named, with what to
/// use instead).
pub(crate) async fn start_lease(
    tenants: &Tenants,
    node_id: &str,
    cfg: &CompactionConfig,
) -> Result<LeaseKeeper> {
    let (store, path) = tenants
        .default_storage()
        .lease_target()
        .context("--role compact needs --storage-url s3://bucket/prefix")?;
    // Beside the lease, one per node: compactors starting together do not
    // trip over each other's probe.
    let probe = format!("{path}.probe-{node_id}");
    lease::verify_conditional_put(store.as_ref(), &probe.into()).await.map_err(|e| {
        anyhow::anyhow!(
            "--role compact: the object store cannot do the conditional puts the compactor lease needs ({e}); \
             use S3 or a store with If-None-Match and If-Match on PutObject (MinIO, R2)"
        )
    })?;
    tracing::info!(node_id, lease = %path, "compactor: waiting for the compactor lease");
    let l = Lease::new(store, path, node_id, cfg.lease_duration);
    Ok(LeaseKeeper::spawn(l, cfg.lease_retry_interval))
}

#[derive(Clone)]
struct RouterState {
    tenants: Arc<Tenants>,
    registry: Arc<Registry>,
    held: watch::Receiver<bool>,
}

/// `/healthz`, `/readyz` (ready once the bucket was listed; says whether
/// the lease is held) and `/metrics`.
pub(crate) fn router(tenants: Arc<Tenants>, registry: Arc<Registry>, held: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(RouterState { tenants, registry, held })
}

async fn readyz(State(st): State<RouterState>) -> Response {
    match st.tenants.default_storage().last_poll_unix_nano() {
        Some(t) => {
            let lease = if *st.held.borrow() { "held" } else { "waiting" };
            let ago = skein_storage::now_unix_nano().saturating_sub(t) / 1_000_000;
            (StatusCode::OK, format!("ready; compactor lease {lease}; catalog polled {ago} ms ago\n"))
                .into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first catalog poll of the bucket\n")
            .into_response(),
    }
}

async fn metrics(State(st): State<RouterState>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &st.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response()
}

/// The compactor's schedule until `stop`: every `poll_interval` a catalog
/// poll of every tenant; while the lease is held, at once after each poll
/// the deletions whose delay has passed, and every `compaction.interval`
/// compaction (unless `compaction.enabled` is false; repeated while there
/// is work, for at most one interval) and retention. On stop the lease is released.
pub(crate) async fn run(
    tenants: Arc<Tenants>,
    keeper: LeaseKeeper,
    gauge: Gauge,
    cfg: CompactionConfig,
    poll_interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let keeper = Arc::new(keeper);
    let mut held = keeper.held();
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_maintenance: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = held.changed() => {
                let now = *held.borrow_and_update();
                gauge.set(i64::from(now));
                if r.is_ok() && now {
                    // A new tenure: compact at its first turn.
                    last_maintenance = None;
                }
                continue;
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        gauge.set(i64::from(keeper.is_held()));
        let due = last_maintenance.is_none_or(|t| t.elapsed() >= cfg.interval);
        let (t, k, c) = (tenants.clone(), keeper.clone(), cfg.clone());
        let did = tokio::task::spawn_blocking(move || turn(&t, &k, &c, due)).await.unwrap_or(false);
        if did {
            last_maintenance = Some(Instant::now());
        }
    }
    gauge.set(0);
    match Arc::try_unwrap(keeper) {
        Ok(k) => k.shutdown().await,
        Err(_) => tracing::warn!("compactor lease not released; it expires by itself"),
    }
}

/// One turn: poll, then (holding the lease) deletions, and with
/// `maintenance` compaction and retention, tenant by tenant. Returns
/// whether compaction and retention ran. Blocking.
fn turn(tenants: &Tenants, keeper: &LeaseKeeper, cfg: &CompactionConfig, maintenance: bool) -> bool {
    if let Err(e) = tenants.poll_catalogs() {
        tracing::error!(error = %e, "compactor: catalog poll of the bucket failed; will retry");
        return false;
    }
    let held = || keeper.is_held();
    let Some(epoch) = *keeper.epoch().borrow() else { return false };
    if !held() {
        return false;
    }
    for (tenant, s) in tenants.all() {
        match s.delete_replaced(&held) {
            Ok(0) => {}
            Ok(n) => tracing::info!(%tenant, segments = n, "compactor: deleted compacted inputs"),
            Err(e) => {
                tracing::error!(%tenant, error = %e, "compactor: deleting compacted inputs failed; will retry")
            }
        }
        if !maintenance {
            continue;
        }
        let until = Instant::now() + cfg.interval;
        while cfg.enabled && held() {
            match s.compact_nodes(epoch, &held) {
                Ok(st) if st.inputs > 0 && Instant::now() < until => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(%tenant, error = %e, "compactor: compaction failed; will retry");
                    break;
                }
            }
        }
        match s.enforce_node_retention(&held) {
            Ok(0) => {}
            Ok(n) => tracing::info!(%tenant, segments = n, "compactor: retention deleted segments"),
            Err(e) => tracing::error!(%tenant, error = %e, "compactor: retention failed; will retry"),
        }
    }
    maintenance && held()
}
