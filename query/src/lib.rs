//! Skein's read side: one query [`engine`] over storage, and the HTTP APIs
//! that adapt it (the native JSON API, Jaeger's and Tempo's), plus health,
//! readiness and metrics.
//!
//! Every handler parses its parameters strictly (a bad value is a 400 that
//! says which parameter and why), runs the read through the engine on the
//! blocking pool with a deadline, and answers in its API's JSON. Errors are
//! one [`Error`] enum, mapped to HTTP statuses in one place.

#![warn(missing_docs)]

pub mod api;
pub mod engine;
mod error;
mod params;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde::Deserialize;
use skein_storage::tenant::{TenantId, Tenants};
use skein_storage::Storage;

pub use api::router;
pub use engine::traceql;
pub use engine::{summarize, Engine, TraceSummary};
pub use error::{Error, Result, RETRY_AFTER_SECS};
pub use params::{
    parse_duration_ns, parse_time, parse_time_in, parse_trace_id, Limit, Params, TimeRange, TimeUnit,
};

/// Query settings (`[query]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Results returned when a request gives no `limit`.
    pub default_limit: usize,
    /// The largest `limit` honoured; bigger requests are capped.
    pub max_limit: usize,
    /// A query still running after this is abandoned with 504.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Traces a TraceQL search evaluates at most (newest first among those
    /// the index selects); bounds the cost of a broad query.
    pub max_traceql_candidates: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            default_limit: 20,
            max_limit: 1000,
            timeout: Duration::from_secs(30),
            max_traceql_candidates: 5000,
        }
    }
}

/// Shared state of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// Every tenant's storage; a request reads only its own tenant's.
    pub tenants: Arc<Tenants>,
    /// The metrics `/metrics` exposes.
    pub registry: Arc<Registry>,
    /// Limits and deadlines of queries.
    pub cfg: QueryConfig,
}

impl ApiState {
    /// The storage `tenant` reads: its own, or an empty one when it has no
    /// data yet (a read never creates a tenant).
    ///
    /// # Errors
    /// None today; fallible so that a tenant's storage may be opened on
    /// demand.
    pub async fn storage(&self, tenant: &TenantId) -> Result<Arc<Storage>> {
        Ok(self.tenants.get_for_read(tenant))
    }

    /// Warnings for an answer about `[start, end]` (Unix ns, open when
    /// `None`) of `tenant`: one per quarantined segment that may have held
    /// part of it (the answer is partial).
    pub fn damage(&self, tenant: &TenantId, start: Option<u64>, end: Option<u64>) -> Vec<String> {
        self.tenants.get_for_read(tenant).damage_in_range(start, end)
    }

    /// The query engine over `tenant`'s storage, with this state's limits.
    ///
    /// # Errors
    /// As [`ApiState::storage`].
    pub async fn engine(&self, tenant: &TenantId) -> Result<Engine> {
        Ok(Engine::new(self.storage(tenant).await?, self.cfg.clone()))
    }
}

/// The tenant a request reads, as the server's authentication layer put it
/// in the request's extensions (from the token or `X-Scope-OrgID`);
/// [`skein_storage::tenant::DEFAULT_TENANT`] when there is none, as in a
/// single-tenant install or a test without that layer.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Tenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        Ok(Tenant(parts.extensions.get::<TenantId>().cloned().unwrap_or_default()))
    }
}
