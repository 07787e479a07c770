//! Skein's read side: one query [`engine`] over storage, and the HTTP APIs
//! that adapt it (the native JSON API, Jaeger's and Tempo's), plus health,
//! readiness and metrics.
//!
//! Every handler parses its parameters strictly (a bad value is a 400 that
//! says which parameter and why), runs the read through the engine on the
//! blocking pool with a deadline, and answers in its API's JSON. Errors are
//! one [`Error`] enum, mapped to HTTP statuses in one place.

#![warn(missing_docs)]

pub mod alerts;
pub mod api;
pub mod engine;
mod error;
pub mod fanout;
pub mod guard;
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
pub use guard::{Guards, Pool, QueryMetrics};
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
    /// A query still running after this is answered 504 and its work is
    /// cancelled: it stops at its next segment or trace.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Traces a TraceQL search evaluates at most (newest first among those
    /// the index selects); bounds the cost of a broad query.
    pub max_traceql_candidates: usize,
    /// Queries running at once, per pool (searches and listings; trace
    /// lookups by ID have their own). Default: twice the CPU cores, at
    /// least 4. A query runs on one thread, busy on the CPU while its data
    /// is on local disk and waiting while it comes from the object store:
    /// twice the cores keeps every core busy through those waits, and more
    /// would only share the cores, so that every query takes longer and
    /// more of them reach `timeout`.
    pub max_concurrent: usize,
    /// How long a query waits for a free slot before it is refused with
    /// 429 and `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// The longest `start`..`end` a query may cover (400 beyond it, as
    /// Tempo's `max_duration` refuses a search); a query without both
    /// bounds is not checked. Default 3660 days: what a search costs is
    /// bounded by the data held, and the web UI's widest preset is ten
    /// years; set it lower to refuse wide ranges.
    #[serde(with = "humantime_serde")]
    pub max_range: Duration,
    /// Spans a trace lookup answers at most: a larger trace is answered
    /// with its first spans by start time and a warning saying so.
    pub max_spans_per_trace: usize,
    /// Series a TraceQL metrics query may answer (`/tempo/api/metrics/...`;
    /// each quantile and histogram bucket is a series): beyond it the query
    /// is refused with 400 naming the limit (Tempo caps the same with its
    /// query frontend's `max_response_series`, default 1000).
    pub max_series: usize,
    /// Points a TraceQL metrics range query may ask for per series
    /// (`(end - start) / step`): beyond it, 400 saying to raise `step`
    /// (Prometheus's and Tempo's query frontends refuse above 11,000).
    pub max_points_per_series: usize,
    /// Log records a LogQL query of the Loki API filters at most (the
    /// newest the indexes select in its range), and the records the Loki
    /// label listings read; past it the answer says it is partial.
    pub max_logql_scan: usize,
    /// `[query.tail]`: live tail limits (`GET /api/v1/tail/logs`).
    pub tail: api::tail::TailConfig,
    /// The MCP server at `/mcp` (`[query.mcp]`).
    pub mcp: McpConfig,
}

/// The MCP server's limits (`[query.mcp]`): what one tool call answers at
/// most, so an agent's context window holds it (grafana/tempo#6767: a
/// whole large trace is millions of characters). The query limits above
/// (`timeout`, `max_concurrent`, `max_range`) apply to its tools too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Serve `/mcp`; `false` answers it 404.
    pub enabled: bool,
    /// Spans one `get_trace` page lists at most (its `page_size` is capped
    /// to this); the rest come on the next pages.
    pub max_spans_per_page: usize,
    /// Log records one `get_trace` page lists at most.
    pub max_logs_per_page: usize,
    /// Entries in each list of `get_trace`'s summary (critical path
    /// sections, error spans, slowest spans) and events shown per error
    /// span.
    pub summary_spans: usize,
    /// Spans one `get_span_details` call answers at most.
    pub max_span_details: usize,
    /// Traces or log records one `search_traces` or `search_logs` call
    /// answers at most (its `limit` is capped to this).
    pub max_results: usize,
    /// `Host` header values `/mcp` accepts (`name` or `name:port`); empty
    /// accepts any, as the rest of the HTTP API does. A local install may
    /// list `localhost` and `127.0.0.1` against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts (`https://app.example:443`, `:*` for
    /// any port). A request with an `Origin` not listed is refused (403):
    /// with the default, empty list, every request a browser page sends,
    /// as the MCP transport specification requires against DNS
    /// rebinding. MCP clients that are not browsers send no `Origin`.
    pub allowed_origins: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            enabled: true,
            max_spans_per_page: 200,
            max_logs_per_page: 100,
            summary_spans: 10,
            max_span_details: 20,
            max_results: 100,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl QueryConfig {
    /// Settings that cannot work, explained.
    ///
    /// # Errors
    /// The first such setting, named with what to set instead.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, zero) in [
            ("timeout", self.timeout.is_zero()),
            ("max_range", self.max_range.is_zero()),
            ("max_concurrent", self.max_concurrent == 0),
            ("max_limit", self.max_limit == 0),
            ("max_spans_per_trace", self.max_spans_per_trace == 0),
            ("max_series", self.max_series == 0),
            ("max_points_per_series", self.max_points_per_series == 0),
            ("max_logql_scan", self.max_logql_scan == 0),
            ("mcp.max_spans_per_page", self.mcp.max_spans_per_page == 0),
            ("mcp.max_logs_per_page", self.mcp.max_logs_per_page == 0),
            ("mcp.summary_spans", self.mcp.summary_spans == 0),
            ("mcp.max_span_details", self.mcp.max_span_details == 0),
            ("mcp.max_results", self.mcp.max_results == 0),
        ] {
            if zero {
                return Err(format!("query.{name} must be more than 0"));
            }
        }
        self.tail.check()
    }
}

/// The default of `query.max_concurrent`: twice the CPU cores, at least 4.
pub fn default_max_concurrent() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2).max(4)
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            default_limit: 20,
            max_limit: 1000,
            timeout: Duration::from_secs(30),
            max_traceql_candidates: 5000,
            max_concurrent: default_max_concurrent(),
            queue_timeout: Duration::from_secs(5),
            // The web UI's widest preset is "Any time (10 years)".
            max_range: Duration::from_secs(3660 * 86_400),
            max_spans_per_trace: 100_000,
            max_series: 1000,
            max_points_per_series: 11_000,
            max_logql_scan: 100_000,
            tail: Default::default(),
            mcp: McpConfig::default(),
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
    /// The concurrency limit every query of this API shares, and the
    /// query counters.
    pub guards: Guards,
    /// An ingest node's `--node-id`: it then serves its memory at
    /// `/internal/v1/head` ([`api::internal`]).
    pub node_id: Option<String>,
    /// A query node's fan-out to the ingest nodes, run before every read
    /// ([`ApiState::storage`]).
    pub fanout: Option<Arc<fanout::Fanout>>,
}

impl ApiState {
    /// The state of an API over `tenants` under `cfg`, its query counters
    /// registered in `registry` (which `/metrics` then shows).
    pub fn new(tenants: Arc<Tenants>, mut registry: Registry, cfg: QueryConfig) -> ApiState {
        let metrics = QueryMetrics::default();
        metrics.register(&mut registry);
        tenants.tail_with_capacity(cfg.tail.channel_capacity).register(&mut registry);
        let guards = Guards::with_metrics(&cfg, metrics);
        ApiState { tenants, registry: Arc::new(registry), cfg, guards, node_id: None, fanout: None }
    }

    /// This state, serving `/internal/v1/head` as ingest node `node_id`.
    pub fn with_node_id(mut self, node_id: String) -> ApiState {
        self.node_id = Some(node_id);
        self
    }

    /// This state, fanning out to ingest nodes before every read.
    pub fn with_fanout(mut self, fanout: Arc<fanout::Fanout>) -> ApiState {
        self.fanout = Some(fanout);
        self
    }

    /// The storage `tenant` reads: its own, or an empty one when it has no
    /// data yet (a read never creates a tenant).
    ///
    /// On a query node, the ingest nodes' memory for `tenant` is fetched
    /// first and made part of the storage's reads ([`fanout`]).
    ///
    /// # Errors
    /// On a query node, a catalog poll the fan-out needed failed.
    pub async fn storage(&self, tenant: &TenantId) -> Result<Arc<Storage>> {
        let s = self.tenants.get_for_read(tenant);
        if let Some(f) = &self.fanout {
            f.refresh(tenant, &s, self.cfg.timeout).await.map_err(Error::Storage)?;
        }
        Ok(s)
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
        Ok(Engine::new(self.storage(tenant).await?, self.cfg.clone()).with_guards(self.guards.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_named() {
        assert!(QueryConfig::default().check().is_ok());
        let c = QueryConfig { max_concurrent: 0, ..Default::default() };
        assert_eq!(c.check().unwrap_err(), "query.max_concurrent must be more than 0");
        let c = QueryConfig { max_range: Duration::ZERO, ..Default::default() };
        assert!(c.check().unwrap_err().contains("query.max_range"));
        let c = QueryConfig {
            mcp: McpConfig { max_spans_per_page: 0, ..Default::default() },
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err(), "query.mcp.max_spans_per_page must be more than 0");
        assert!(default_max_concurrent() >= 4);
    }
}
