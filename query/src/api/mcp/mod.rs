//! `/mcp`: a Model Context Protocol server (streamable HTTP transport,
//! the official Rust SDK `rmcp`) whose tools read the same data as the
//! other APIs, through the same [`Engine`](crate::Engine) calls, limits and
//! deadlines.
//!
//! The tools follow Jaeger's MCP server (`jaeger_mcp`: `search_traces`,
//! `get_span_details`, `get_services`, the critical path) and
//! grafana/tempo#6767 (a trace an agent reads in bounded pieces):
//! searches answer summaries, `get_trace` answers a summary and pages of
//! compact spans and logs, and `get_span_details` the full spans an agent
//! picked. Every answer is bounded by `[query.mcp]`.
//!
//! The server is stateless (no MCP session is kept between requests), so
//! any query node can answer any request. The tenant and the token are
//! checked per request by the layers that guard the whole HTTP API, which
//! put the tenant in the request's extensions; each tool reads it there.
//! Bad arguments are tool errors (`isError: true` with the message), as
//! the MCP specification asks ("Error Handling": input validation errors
//! are tool execution errors), so the agent sees what to change: rmcp
//! answers so for arguments the schema refuses (a wrong type, a missing
//! or unknown field), and [`tool_error`] for values the tools or the
//! engine refuse.

#[cfg(test)]
mod tests;
pub(crate) mod trace_page;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};
use skein_storage::filter::{analyzer, parse_severity, tokenize, LogFilter, SpanFilter, StatusFilter};
use skein_storage::model::{kind, SpanId};
use skein_storage::rollup::BUCKET_NS;
use skein_storage::tenant::TenantId;

use self::trace_page::Position;
use crate::api::native::{self, json as native_json};
use crate::engine::traceql::TraceQl;
use crate::engine::{RedQuery, TraceQuery, TraceSort};
use crate::error::{Error, Result};
use crate::params::{parse_duration_ns, parse_time, parse_trace_id, TimeRange};
use crate::ApiState;

/// The range of `get_red_metrics` and `get_service_map` without `start`:
/// the last hour.
const DEFAULT_LOOKBACK_NS: u64 = 3600 * 1_000_000_000;

/// What the server tells the agent at `initialize`: how the tools fit
/// together.
const INSTRUCTIONS: &str = "Skein holds OpenTelemetry traces and logs. Start with get_services (and \
get_operations) to learn names; find traces with search_traces (conditions on one span, or TraceQL in \
q) or logs with search_logs; read a trace with get_trace, whose first page summarizes it (critical \
path, error spans, slowest spans) and whose next pages follow page.next_cursor; fetch full spans \
(attributes, events) with get_span_details. get_service_map and get_red_metrics show the services' \
calls, request rates, errors and latencies. Times: Unix nanoseconds, RFC 3339, `now`, or relative \
like `-1h`; durations like 250ms or 1.5s.";

/// The `/mcp` endpoint over `st`: stateless streamable HTTP answering
/// JSON (no server-sent events: no tool streams), with the `Host` and
/// `Origin` checks of `[query.mcp]`.
pub(crate) fn service(st: ApiState) -> StreamableHttpService<SkeinMcp, NeverSessionManager> {
    let cfg = &st.cfg.mcp;
    let mut http = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_origins(cfg.allowed_origins.clone())
        .enforce_origin_validation();
    http = if cfg.allowed_hosts.is_empty() {
        http.disable_allowed_hosts()
    } else {
        http.with_allowed_hosts(cfg.allowed_hosts.clone())
    };
    let server = SkeinMcp::new(st);
    StreamableHttpService::new(move || Ok(server.clone()), Arc::new(NeverSessionManager::default()), http)
}

/// The MCP server: the tools over one [`ApiState`].
#[derive(Debug, Clone)]
pub struct SkeinMcp {
    st: ApiState,
    tool_router: ToolRouter<SkeinMcp>,
}

/// `status` of `search_traces`.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusArg {
    /// The span's status is ERROR.
    Error,
    /// The span's status is OK.
    Ok,
}

/// `sort` of `search_traces`.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortArg {
    /// Newest first (the default).
    Start,
    /// Longest first, over the whole range.
    Duration,
}

/// Arguments of `search_traces`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchTracesArgs {
    /// A span of the trace is from this service (resource attribute
    /// service.name); see get_services.
    pub service: Option<String>,
    /// That span has this operation (span name); see get_operations.
    pub operation: Option<String>,
    /// That span (or its resource) has these attributes, e.g.
    /// {"http.response.status_code": "500"}; values compare as text.
    pub attributes: Option<BTreeMap<String, String>>,
    /// That span lasts at least this long, e.g. 250ms, 1.5s.
    pub min_duration: Option<String>,
    /// That span lasts at most this long, e.g. 2s.
    pub max_duration: Option<String>,
    /// That span's status: error or ok.
    pub status: Option<StatusArg>,
    /// A TraceQL query for conditions across spans or on the whole trace,
    /// e.g. { resource.service.name = "cart" && status = error } >> { span.db.system = "redis" }.
    pub q: Option<String>,
    /// Earliest span start: Unix ns, RFC 3339, `now`, or relative like -1h. Default: no bound.
    pub start: Option<String>,
    /// Latest span start, in the same forms. Default: no bound.
    pub end: Option<String>,
    /// Traces to answer at most (default 20, capped at query.mcp.max_results).
    pub limit: Option<u64>,
    /// start: newest first (default); duration: longest first.
    pub sort: Option<SortArg>,
}

/// Arguments of `get_trace`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetTraceArgs {
    /// The trace ID, 32 hex digits (shorter IDs are left-padded with zeroes).
    pub trace_id: String,
    /// The page to read, counting from 1 (default 1, which carries the summary).
    pub page: Option<u64>,
    /// Spans and log records per page (default and cap: query.mcp.max_spans_per_page and max_logs_per_page).
    pub page_size: Option<u64>,
    /// The page.next_cursor of the previous page, to read the next one (instead of page and page_size).
    pub cursor: Option<String>,
}

/// Arguments of `get_span_details`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSpanDetailsArgs {
    /// The trace ID, hex.
    pub trace_id: String,
    /// Span IDs (16 hex digits each) from get_trace, at most query.mcp.max_span_details.
    pub span_ids: Vec<String>,
}

/// Arguments of `search_logs`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchLogsArgs {
    /// Words to find in the body or attribute values (full text; all must match).
    pub q: Option<String>,
    /// Only records of this service.
    pub service: Option<String>,
    /// Lowest severity: TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24.
    pub severity: Option<String>,
    /// Only records of this trace (hex trace ID).
    pub trace_id: Option<String>,
    /// Earliest record time: Unix ns, RFC 3339, `now`, or relative like -1h. Default: no bound.
    pub start: Option<String>,
    /// Latest record time, in the same forms. Default: no bound.
    pub end: Option<String>,
    /// Records to answer at most, newest first (default 50, capped at query.mcp.max_results).
    pub limit: Option<u64>,
}

/// Arguments of `get_operations`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetOperationsArgs {
    /// The service whose operations to list; see get_services.
    pub service: String,
}

/// Arguments of `get_service_map`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetServiceMapArgs {
    /// Range start: Unix ns, RFC 3339, `now`, or relative like -1h. Default: an hour before end.
    pub start: Option<String>,
    /// Range end, in the same forms. Default: now.
    pub end: Option<String>,
}

/// Arguments of `get_red_metrics`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetRedMetricsArgs {
    /// Only this service; with it, each of its operations gets its own row too.
    pub service: Option<String>,
    /// Only this operation (of service).
    pub operation: Option<String>,
    /// Range start: Unix ns, RFC 3339, `now`, or relative like -1h. Default: an hour before end.
    pub start: Option<String>,
    /// Range end, in the same forms. Default: now.
    pub end: Option<String>,
}

/// `v` as a tool's answer: its JSON as text.
fn answer(v: Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

/// An engine or argument error as a tool error the agent can act on.
fn tool_error(e: &Error) -> CallToolResult {
    let what = match e {
        Error::BadRequest(_) => "bad argument",
        Error::NotFound(_) => "not found",
        Error::Deadline(_) => "too slow",
        Error::TooBusy(_) | Error::NotReady | Error::Overloaded(_) => "busy, retry shortly",
        _ => "failed",
    };
    CallToolResult::error(vec![ContentBlock::text(format!("{what}: {e}"))])
}

/// The tool's answer, or its error as a tool error.
fn reply(r: Result<Value>) -> CallToolResult {
    r.map_or_else(|e| tool_error(&e), answer)
}

/// A time argument: Unix ns, RFC 3339, `now`, or `-DURATION` (before now).
fn time_arg(name: &str, v: &str) -> Result<u64> {
    let v = v.trim();
    let now = skein_storage::now_unix_nano;
    if v.eq_ignore_ascii_case("now") {
        return Ok(now());
    }
    let rel = v.strip_prefix("now-").or_else(|| v.strip_prefix('-'));
    if let Some(d) = rel {
        let d = parse_duration_ns(d).map_err(|e| Error::bad(format!("{name}: {e}")))?;
        return Ok(now().saturating_sub(d));
    }
    parse_time(v).map_err(|e| Error::bad(format!("{name}: {e}; or use now or -1h")))
}

/// `start`/`end` as a checked range (`start <= end`, within
/// `query.max_range`).
fn range(st: &ApiState, start: Option<&str>, end: Option<&str>) -> Result<TimeRange> {
    let r = TimeRange {
        start_ns: start.map(|v| time_arg("start", v)).transpose()?,
        end_ns: end.map(|v| time_arg("end", v)).transpose()?,
    };
    if let (Some(a), Some(b)) = (r.start_ns, r.end_ns) {
        if a > b {
            return Err(Error::bad("start is after end"));
        }
    }
    r.within(st.cfg.max_range, "start", "end")?;
    Ok(r)
}

/// A duration argument in ns.
fn duration_arg(name: &str, v: Option<&str>) -> Result<Option<u64>> {
    v.map(|v| parse_duration_ns(v).map_err(|e| Error::bad(format!("{name}: {e}")))).transpose()
}

/// `limit`, defaulting to `default` and capped at `query.mcp.max_results`
/// (and `query.max_limit`); the cap and whether it applied.
fn limit(st: &ApiState, asked: Option<u64>, default: usize) -> Result<(usize, bool)> {
    let cap = st.cfg.mcp.max_results.min(st.cfg.max_limit);
    match asked {
        Some(0) => Err(Error::bad("limit must be at least 1")),
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            Ok((n.min(cap), n > cap))
        }
        None => Ok((default.min(cap), false)),
    }
}

/// The tenant of the HTTP request behind `ctx`, as the auth layer set it.
fn tenant(ctx: &RequestContext<RoleServer>) -> TenantId {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<TenantId>().cloned())
        .unwrap_or_default()
}

/// `{"warnings": [...]}` added when not empty.
fn with_warnings(v: Value, w: &[String]) -> Value {
    native::with_warnings(v, w)
}

#[tool_router]
impl SkeinMcp {
    /// The server over `st`.
    pub fn new(st: ApiState) -> SkeinMcp {
        SkeinMcp { st, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Find traces: conditions on one span (service, operation, attributes, duration, status, as \
                       Jaeger's search) and/or a TraceQL query q. Answers trace summaries (ID, root service and \
                       operation, start, duration, span and error counts, services), newest first.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_traces(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<SearchTracesArgs>,
    ) -> CallToolResult {
        reply(self.search_traces_impl(&tenant(&ctx), a).await)
    }

    #[tool(
        description = "Read one trace in bounded pages. Page 1 summarizes it: span and log counts, services, \
                       root, duration, the critical path (which spans the time was spent in), error spans with \
                       their status messages and events, the slowest spans with their self time. Every page lists \
                       the next spans in tree order (compact: no attributes) and the trace's logs by time; follow \
                       page.next_cursor until it is null. Full spans: get_span_details.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_trace(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GetTraceArgs>,
    ) -> CallToolResult {
        reply(self.get_trace_impl(&tenant(&ctx), a).await)
    }

    #[tool(
        description = "Full spans of a trace by span ID: attributes, resource, events, links, status, times.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_span_details(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GetSpanDetailsArgs>,
    ) -> CallToolResult {
        reply(self.span_details_impl(&tenant(&ctx), a).await)
    }

    #[tool(
        description = "Find log records, newest first: full-text words, service, lowest severity, trace ID, \
                       time range.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search_logs(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<SearchLogsArgs>,
    ) -> CallToolResult {
        reply(self.search_logs_impl(&tenant(&ctx), a).await)
    }

    #[tool(
        description = "Every service with its span and error counts.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_services(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        let t = tenant(&ctx);
        reply(
            async {
                let services: Vec<Value> = self
                    .st
                    .engine(&t)
                    .await?
                    .services()
                    .await?
                    .into_iter()
                    .map(
                        |s| json!({"name": s.name, "span_count": s.span_count, "error_count": s.error_count}),
                    )
                    .collect();
                Ok(with_warnings(json!({ "services": services }), &self.st.damage(&t, None, None)))
            }
            .await,
        )
    }

    #[tool(
        description = "The operations (span names) of a service, with span kind and span count.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_operations(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GetOperationsArgs>,
    ) -> CallToolResult {
        let t = tenant(&ctx);
        reply(
            async {
                let ops = self.st.engine(&t).await?.operations(Some(a.service.clone())).await?;
                if ops.is_empty() {
                    return Err(Error::not_found(format!("service {:?} has no spans; see get_services", a.service)));
                }
                let ops: Vec<Value> = ops
                    .into_iter()
                    .map(|o| json!({"name": o.name, "span_kind": kind::name(o.kind), "span_count": o.span_count}))
                    .collect();
                Ok(json!({"service": a.service, "operations": ops}))
            }
            .await,
        )
    }

    #[tool(
        description = "The service map: which service calls which (parent → child), with call and error counts \
                       and call latency percentiles (ns), over a time range (default the last hour).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_service_map(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GetServiceMapArgs>,
    ) -> CallToolResult {
        let t = tenant(&ctx);
        reply(
            async {
                let r = range(&self.st, a.start.as_deref(), a.end.as_deref())?;
                let (start, end) = r.or_last(DEFAULT_LOOKBACK_NS);
                if start > end {
                    return Err(Error::bad("start is after end (end defaults to now)"));
                }
                let edges: Vec<Value> = self
                    .st
                    .engine(&t)
                    .await?
                    .dependencies(Some(start), Some(end))
                    .await?
                    .into_iter()
                    .map(|e| {
                        json!({
                            "parent": e.parent, "child": e.child,
                            "call_count": e.call_count, "error_count": e.error_count,
                            "p50_ns": e.p50_ns, "p95_ns": e.p95_ns, "p99_ns": e.p99_ns,
                            "connection_type": e.connection_type.label(),
                        })
                    })
                    .collect();
                let v = json!({
                    "start_time_unix_nano": start.to_string(),
                    "end_time_unix_nano": end.to_string(),
                    "edges": edges,
                });
                Ok(with_warnings(v, &self.st.damage(&t, Some(start), Some(end))))
            }
            .await,
        )
    }

    #[tool(
        description = "RED metrics over a time range (default the last hour), per service and, with service, \
                       per operation: requests (entry spans) and their rate per second, errors and error rate, \
                       latency p50/p95/p99 in ns (approximate, from rollups).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_red_metrics(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(a): Parameters<GetRedMetricsArgs>,
    ) -> CallToolResult {
        reply(self.red_impl(&tenant(&ctx), a).await)
    }
}

impl SkeinMcp {
    async fn search_traces_impl(&self, t: &TenantId, a: SearchTracesArgs) -> Result<Value> {
        let st = &self.st;
        let r = range(st, a.start.as_deref(), a.end.as_deref())?;
        let mut attrs = Vec::new();
        for (k, v) in a.attributes.unwrap_or_default() {
            if k.is_empty() {
                return Err(Error::bad("attributes: a key is empty"));
            }
            attrs.push((k, v));
        }
        let filter = SpanFilter {
            service: a.service,
            operation: a.operation,
            attrs,
            min_duration_ns: duration_arg("min_duration", a.min_duration.as_deref())?,
            max_duration_ns: duration_arg("max_duration", a.max_duration.as_deref())?,
            status: a.status.map(|s| match s {
                StatusArg::Error => StatusFilter::Error,
                StatusArg::Ok => StatusFilter::Ok,
            }),
            start_ns: r.start_ns,
            end_ns: r.end_ns,
        };
        if let (Some(lo), Some(hi)) = (filter.min_duration_ns, filter.max_duration_ns) {
            if lo > hi {
                return Err(Error::bad("min_duration is larger than max_duration"));
            }
        }
        let traceql = match a.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            None => None,
            Some(q) if q.len() > native::MAX_TRACEQL_LEN => {
                return Err(Error::bad(format!("q is longer than {} bytes", native::MAX_TRACEQL_LEN)))
            }
            Some(q) => Some(TraceQl::parse(q).map_err(|e| Error::bad(e.to_string()))?),
        };
        let (limit, capped) = limit(st, a.limit, st.cfg.default_limit)?;
        let q = TraceQuery {
            filter,
            limit,
            traceql,
            sort: match a.sort {
                Some(SortArg::Duration) => TraceSort::Duration,
                _ => TraceSort::default(),
            },
            ..Default::default()
        };
        let r = st.engine(t).await?.search_traces(q).await?;
        let traces: Vec<Value> = r.traces.iter().map(|h| native_json::summary(&h.summary)).collect();
        let v = json!({"traces": traces, "limit": limit, "limit_capped": capped});
        Ok(with_warnings(v, &r.warnings))
    }

    async fn get_trace_impl(&self, t: &TenantId, a: GetTraceArgs) -> Result<Value> {
        let cfg = &self.st.cfg.mcp;
        let id = parse_trace_id(a.trace_id.trim())?;
        let pos = match a.cursor.as_deref() {
            Some(_) if a.page.is_some() || a.page_size.is_some() => {
                return Err(Error::bad("give cursor alone, or page and page_size, not both"));
            }
            Some(c) => Position::from_cursor(c, cfg)?,
            None => Position::page(a.page, a.page_size, cfg)?,
        };
        let trace = self.st.engine(t).await?.trace(id).await?;
        let trace = trace.ok_or_else(|| Error::not_found(format!("trace {} not found", id.to_hex())))?;
        // The summary walks every span: off the async threads.
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || trace_page::page(&trace, pos, &cfg))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    async fn span_details_impl(&self, t: &TenantId, a: GetSpanDetailsArgs) -> Result<Value> {
        let max = self.st.cfg.mcp.max_span_details;
        let id = parse_trace_id(a.trace_id.trim())?;
        if a.span_ids.is_empty() {
            return Err(Error::bad("span_ids is empty; get_trace lists a trace's span IDs"));
        }
        if a.span_ids.len() > max {
            return Err(Error::bad(format!(
                "{} span IDs asked, at most {max} per call (query.mcp.max_span_details)",
                a.span_ids.len()
            )));
        }
        let mut want = Vec::new();
        for s in &a.span_ids {
            let sid = hex::decode(s.trim())
                .ok()
                .and_then(|b| SpanId::from_slice(&b))
                .ok_or_else(|| Error::bad(format!("span ID {s:?} is not 16 hex digits")))?;
            want.push(sid);
        }
        let trace = self.st.engine(t).await?.trace(id).await?;
        let trace = trace.ok_or_else(|| Error::not_found(format!("trace {} not found", id.to_hex())))?;
        let wanted: HashSet<SpanId> = want.iter().copied().collect();
        let spans: Vec<Value> =
            trace.spans.iter().filter(|s| wanted.contains(&s.span_id)).map(native_json::span).collect();
        let found: HashSet<SpanId> = trace.spans.iter().map(|s| s.span_id).collect();
        let missing: Vec<String> = want.iter().filter(|s| !found.contains(s)).map(|s| s.to_hex()).collect();
        let mut logs: Vec<_> =
            trace.logs.iter().filter(|l| l.span_id.is_some_and(|s| wanted.contains(&s))).collect();
        logs.sort_by_key(|l| l.time_unix_nano);
        let logs_total = logs.len();
        logs.truncate(self.st.cfg.mcp.max_logs_per_page);
        let v = json!({
            "trace_id": id.to_hex(),
            "spans": spans,
            "not_found": missing,
            "logs": logs.iter().map(|l| native_json::log(l)).collect::<Vec<_>>(),
            "logs_total": logs_total,
        });
        Ok(with_warnings(v, &trace.warnings))
    }

    async fn search_logs_impl(&self, t: &TenantId, a: SearchLogsArgs) -> Result<Value> {
        let st = &self.st;
        let mut words = Vec::new();
        if let Some(q) = a.q.as_deref() {
            tokenize(&mut analyzer(), q, &mut words);
            if words.is_empty() {
                return Err(Error::bad(format!("q {q:?} has no searchable words")));
            }
        }
        let min_severity = a
            .severity
            .as_deref()
            .map(|s| {
                parse_severity(s).ok_or_else(|| {
                    Error::bad(format!("severity {s:?}: use TRACE, DEBUG, INFO, WARN, ERROR, FATAL or 1-24"))
                })
            })
            .transpose()?;
        let r = range(st, a.start.as_deref(), a.end.as_deref())?;
        let f = LogFilter {
            words,
            service: a.service,
            min_severity,
            trace_id: a.trace_id.as_deref().map(|s| parse_trace_id(s.trim())).transpose()?,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
        };
        let (limit, capped) = limit(st, a.limit, 50)?;
        let r = st.engine(t).await?.search_logs(f, limit).await?;
        let logs: Vec<Value> = r.logs.iter().map(native_json::log).collect();
        Ok(with_warnings(json!({"logs": logs, "limit": limit, "limit_capped": capped}), &r.warnings))
    }

    async fn red_impl(&self, t: &TenantId, a: GetRedMetricsArgs) -> Result<Value> {
        let st = &self.st;
        if a.operation.is_some() && a.service.is_none() {
            return Err(Error::bad("operation needs service"));
        }
        let (start, end) = range(st, a.start.as_deref(), a.end.as_deref())?.or_last(DEFAULT_LOOKBACK_NS);
        if start > end {
            return Err(Error::bad("start is after end (end defaults to now)"));
        }
        // One step wider than the range puts every minute in bucket 0: one
        // row per series over the whole range.
        let step_ns = (end / BUCKET_NS + 1).saturating_mul(BUCKET_NS);
        let q =
            RedQuery { start_ns: start, end_ns: end, step_ns, service: a.service, operation: a.operation };
        let secs = ((end - start) as f64 / 1e9).max(1.0);
        let rows: Vec<Value> = st
            .engine(t)
            .await?
            .red(q)
            .await?
            .into_iter()
            .filter_map(|s| {
                let p = s.points.into_iter().next()?;
                let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                Some(json!({
                    "service": s.service,
                    "operation": s.operation,
                    "request_count": p.request_count,
                    "requests_per_second": native_json::double(p.request_count as f64 / secs),
                    "error_count": p.error_count,
                    "error_rate": native_json::double(ratio(p.error_count, p.request_count)),
                    "p50_ns": p.p50_ns,
                    "p95_ns": p.p95_ns,
                    "p99_ns": p.p99_ns,
                }))
            })
            .collect();
        let v = json!({
            "start_time_unix_nano": start.to_string(),
            "end_time_unix_nano": end.to_string(),
            "percentiles_approximate": true,
            "series": rows,
        });
        Ok(with_warnings(v, &st.damage(t, Some(start), Some(end))))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SkeinMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("skein", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}
