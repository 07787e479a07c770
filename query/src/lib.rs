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
    /// The storage every query reads.
    pub storage: Arc<Storage>,
    /// The metrics `/metrics` exposes.
    pub registry: Arc<Registry>,
    /// Limits and deadlines of queries.
    pub cfg: QueryConfig,
}

impl ApiState {
    /// The query engine over this state's storage and limits.
    pub fn engine(&self) -> Engine {
        Engine::new(self.storage.clone(), self.cfg.clone())
    }
}
