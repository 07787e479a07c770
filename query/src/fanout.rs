//! A query node's fan-out to the ingest nodes (issue 14): before a query
//! reads, every ingest node is asked for what it holds in memory for the
//! query's tenant (`GET /internal/v1/head`, [`crate::api::internal`]), and
//! the answers become part of the query node's reads
//! ([`Storage::install_node_memory`]), merged with the segments of the
//! bucket by the same rules as a single node's head and segments (a span
//! found twice is one span). An ingest node that does not answer within
//! `cluster.fanout_timeout` (or the query's own timeout, if shorter) makes
//! every answer partial: its `warnings` name the node, as Jaeger's
//! `errors` and Tempo's partial status do for a failed querier job.
//!
//! The ingest nodes are a static list of base URLs, or
//! `dns+http://NAME:PORT`, resolved at every fan-out to every A/AAAA
//! record (a Kubernetes headless Service gives one per ready pod), as
//! Tempo and Loki resolve `dns+` addresses.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::Deserialize;
use skein_storage::cluster::MemoryExport;
use skein_storage::tenant::TenantId;
use skein_storage::Storage;

/// Cluster settings of a query node (`[cluster]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How often a query node lists the bucket for new and removed
    /// segments. A segment an ingest node has uploaded is found at once
    /// anyway (its fan-out answer lists it); this bounds how long a
    /// segment the compactor removed or wrote stays unseen or listed.
    #[serde(with = "humantime_serde")]
    pub catalog_poll_interval: Duration,
    /// How long the query node waits for each ingest node's answer
    /// before answering without it, with a warning (at most the query's
    /// `query.timeout`).
    #[serde(with = "humantime_serde")]
    pub fanout_timeout: Duration,
    /// A file holding the bearer token the query node presents to the
    /// ingest nodes' internal endpoint (one of their query tokens, not
    /// bound to a tenant when multi-tenancy is on); none: no token.
    pub fanout_token_file: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            catalog_poll_interval: Duration::from_secs(15),
            fanout_timeout: Duration::from_secs(5),
            fanout_token_file: None,
        }
    }
}

impl ClusterConfig {
    /// Settings that cannot work, explained.
    ///
    /// # Errors
    /// The first such setting.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.catalog_poll_interval.is_zero() {
            return Err("cluster.catalog_poll_interval must be more than 0".into());
        }
        if self.fanout_timeout.is_zero() {
            return Err("cluster.fanout_timeout must be more than 0".into());
        }
        Ok(())
    }
}

/// Where the ingest nodes are (`--ingest-nodes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestNodes {
    /// Base URLs (`http://host:port`), as given.
    Static(Vec<String>),
    /// `dns+http://NAME:PORT`: every address `NAME` resolves to, port `PORT`.
    Dns {
        /// The host name to resolve.
        host: String,
        /// The port of every node's `--http-addr`.
        port: u16,
    },
}

impl IngestNodes {
    /// Parses `URL,URL...` (each `http://` or `https://` `HOST:PORT`) or
    /// `dns+http://NAME:PORT`.
    ///
    /// # Errors
    /// A message saying which part is wrong.
    pub fn parse(s: &str) -> std::result::Result<IngestNodes, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("dns+http://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("--ingest-nodes {s:?}: expected dns+http://NAME:PORT"))?;
            let port = port.parse().map_err(|_| format!("--ingest-nodes {s:?}: bad port {port:?}"))?;
            if host.is_empty() || host.contains('/') {
                return Err(format!("--ingest-nodes {s:?}: expected dns+http://NAME:PORT"));
            }
            return Ok(IngestNodes::Dns { host: host.to_string(), port });
        }
        let mut v = Vec::new();
        for u in s.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
            match rest {
                Some(r) if !r.is_empty() && !r.trim_end_matches('/').contains('/') => {
                    v.push(u.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(format!(
                        "--ingest-nodes: {u:?} is not a base URL (http://HOST:PORT) nor dns+http://NAME:PORT"
                    ))
                }
            }
        }
        if v.is_empty() {
            return Err("--ingest-nodes is empty".into());
        }
        Ok(IngestNodes::Static(v))
    }

    /// The nodes' base URLs now (a DNS name resolved again).
    ///
    /// # Errors
    /// The name does not resolve.
    pub async fn resolve(&self) -> std::result::Result<Vec<String>, String> {
        match self {
            IngestNodes::Static(v) => Ok(v.clone()),
            IngestNodes::Dns { host, port } => {
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("ingest nodes: cannot resolve {host}: {e}"))?;
                let mut v: Vec<String> = addrs.map(|a| format!("http://{a}")).collect();
                v.sort();
                v.dedup();
                Ok(v)
            }
        }
    }
}

/// One ingest node's live-tail events ([`Fanout::tail_streams`]).
pub struct NodeEvents {
    /// The node's base URL.
    pub node: String,
    /// Its server-sent events, in order; an `Err` ends the stream.
    pub events: futures::stream::BoxStream<'static, Result<sse_stream::Sse, String>>,
}

impl std::fmt::Debug for NodeEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEvents").field("node", &self.node).finish_non_exhaustive()
    }
}

/// The fan-out of one query node.
#[derive(Debug)]
pub struct Fanout {
    nodes: IngestNodes,
    timeout: Duration,
    token: Option<String>,
    client: reqwest::Client,
    /// Per tenant, one refresh at a time, and when the last one started.
    flights: dashmap::DashMap<TenantId, Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>>,
}

impl Fanout {
    /// A fan-out to `nodes`, waiting `timeout` for each, presenting `token`.
    pub fn new(nodes: IngestNodes, timeout: Duration, token: Option<String>) -> Fanout {
        Fanout { nodes, timeout, token, client: reqwest::Client::new(), flights: Default::default() }
    }

    /// Asks every ingest node for its memory for `tenant` and installs the
    /// answers in `storage` ([`Storage::install_node_memory`]); a node that
    /// fails or does not answer within the timeout (at most `limit`)
    /// becomes a warning of every answer until the next fan-out.
    ///
    /// One refresh per tenant runs at a time: a query that arrives while
    /// one is in flight waits for it and then starts its own, unless a
    /// refresh that started after the query arrived has completed in the
    /// meantime (its answers hold every record acknowledged before the
    /// query arrived), so concurrent queries share fetches, a query still
    /// reads what was acknowledged before it, and an older snapshot is
    /// never installed over a newer one.
    ///
    /// # Errors
    /// A catalog poll the install needed failed.
    pub async fn refresh(
        &self,
        tenant: &TenantId,
        storage: &Arc<Storage>,
        limit: Duration,
    ) -> skein_storage::Result<()> {
        let arrived = tokio::time::Instant::now();
        let flight = self.flights.entry(tenant.clone()).or_default().clone();
        let mut last = flight.lock().await;
        if last.is_some_and(|started| started >= arrived) {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        self.fetch_and_install(tenant, storage, limit).await?;
        *last = Some(started);
        Ok(())
    }

    async fn fetch_and_install(
        &self,
        tenant: &TenantId,
        storage: &Arc<Storage>,
        limit: Duration,
    ) -> skein_storage::Result<()> {
        let timeout = self.timeout.min(limit);
        let mut warnings = Vec::new();
        let urls = match self.nodes.resolve().await {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!("{e}; this answer may be missing data not yet uploaded"));
                Vec::new()
            }
        };
        let asks = urls.iter().map(|u| self.ask(u, tenant, timeout));
        let answers = futures::future::join_all(asks).await;
        let mut exports = Vec::new();
        for (u, a) in urls.iter().zip(answers) {
            match a {
                Ok(e) => exports.push(e),
                Err(e) => warnings.push(format!(
                    "ingest node {u} did not answer ({e}); this answer may be missing its data not yet uploaded"
                )),
            }
        }
        let s = storage.clone();
        tokio::task::spawn_blocking(move || s.install_node_memory(exports, warnings))
            .await
            .map_err(|e| skein_storage::Error::Config(format!("fan-out: {e}")))?
    }

    /// Opens every ingest node's live tail of `tenant`
    /// (`GET /api/v1/tail/logs?{query}`, [`crate::api::tail`]): its
    /// server-sent events as they come, each stream named by the node's
    /// base URL. A node that does not answer with a stream within the
    /// fan-out timeout is left out, with a warning naming it.
    pub async fn tail_streams(&self, tenant: &TenantId, query: &str) -> (Vec<NodeEvents>, Vec<String>) {
        let mut warnings = Vec::new();
        let urls = match self.nodes.resolve().await {
            Ok(v) => v,
            Err(e) => return (Vec::new(), vec![e]),
        };
        let opens = urls.iter().map(|base| async move {
            let mut req = self
                .client
                .get(format!("{base}/api/v1/tail/logs?{query}"))
                .header("X-Scope-OrgID", tenant.as_str())
                .header("Accept", "text/event-stream");
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            // The whole-request timeout would cut the stream: only the
            // answer's head is waited for.
            match tokio::time::timeout(self.timeout, req.send()).await {
                Err(_) => Err("timed out".to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(r)) if !r.status().is_success() => Err(format!("HTTP {}", r.status())),
                Ok(Ok(r)) => Ok(r),
            }
        });
        let mut streams = Vec::new();
        for (base, r) in urls.iter().zip(futures::future::join_all(opens).await) {
            match r {
                Ok(r) => {
                    let chunks = futures::stream::unfold(Some(r), |r| async move {
                        let mut r = r?;
                        match r.chunk().await {
                            Ok(Some(b)) => Some((Ok(b), Some(r))),
                            Ok(None) => None,
                            Err(e) => Some((Err(e), None)),
                        }
                    });
                    let events = sse_stream::SseStream::from_bytes_stream(chunks)
                        .map(|e| e.map_err(|e| e.to_string()));
                    streams.push(NodeEvents { node: base.clone(), events: Box::pin(events) });
                }
                Err(e) => warnings.push(format!(
                    "ingest node {base}: its live tail did not open ({e}); its new records are not followed"
                )),
            }
        }
        (streams, warnings)
    }

    async fn ask(&self, base: &str, tenant: &TenantId, timeout: Duration) -> Result<MemoryExport, String> {
        let mut req = self
            .client
            .get(format!("{base}/internal/v1/head"))
            .timeout(timeout)
            .header("X-Scope-OrgID", tenant.as_str());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r =
            req.send().await.map_err(|e| if e.is_timeout() { "timed out".into() } else { e.to_string() })?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status()));
        }
        let body =
            r.bytes().await.map_err(|e| if e.is_timeout() { "timed out".into() } else { e.to_string() })?;
        tokio::task::spawn_blocking(move || MemoryExport::decode(&body))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use skein_storage::tenant::Tenants;
    use skein_storage::testsuite::{append_spans_of, test_config, trace_id};
    use skein_storage::{Storage, StorageConfig};

    use super::*;
    use crate::api::tests::get;
    use crate::{ApiState, QueryConfig};

    #[test]
    fn test_ingest_nodes_forms() {
        assert_eq!(
            IngestNodes::parse("http://a:1, http://b:2/").unwrap(),
            IngestNodes::Static(vec!["http://a:1".into(), "http://b:2".into()])
        );
        assert_eq!(
            IngestNodes::parse("dns+http://skein-ingest.ns.svc:16686").unwrap(),
            IngestNodes::Dns { host: "skein-ingest.ns.svc".into(), port: 16686 }
        );
        for bad in ["", "a:1", "dns+http://name", "dns+http://name:x", "http://a:1/path", "ftp://a"] {
            assert!(IngestNodes::parse(bad).is_err(), "{bad:?}");
        }
        let c = ClusterConfig { fanout_timeout: Duration::ZERO, ..Default::default() };
        assert!(c.check().unwrap_err().contains("fanout_timeout"));
    }

    /// An ingest node that answers and one that never does (it accepts
    /// the connection and stays silent): the query node answers with the
    /// first one's data, and says the answer is partial, naming the
    /// other, on the native and Jaeger APIs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_a_silent_ingest_node_makes_the_answer_partial() {
        let bucket = tempfile::tempdir().unwrap();
        let url = format!("file://{}", bucket.path().display());
        let (d1, dq) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg =
            |url: String, mirror: bool| StorageConfig { storage_url: Some(url), mirror, ..test_config() };
        let n1 = Storage::open(d1.path(), cfg(skein_storage::cluster::node_storage_url(&url, "n1"), false))
            .unwrap();
        n1.replay().unwrap();
        append_spans_of(&n1, 1, 0, 2).await;
        n1.flush(true).unwrap();
        append_spans_of(&n1, 1, 2, 3).await;
        let ingest =
            ApiState::new(Tenants::from_storage(n1.clone()), Default::default(), QueryConfig::default())
                .with_node_id("n1".into());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let n1_url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, crate::router(ingest)).await });
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        });

        let q = Storage::open(dq.path(), cfg(url, true)).unwrap();
        let tq = Tenants::from_storage(q.clone());
        let q2 = q.clone();
        tokio::task::spawn_blocking(move || q2.poll_catalog()).await.unwrap().unwrap();
        let fan = |nodes: Vec<String>| {
            Arc::new(Fanout::new(IngestNodes::Static(nodes), Duration::from_millis(300), None))
        };
        let app = |nodes| {
            crate::router(
                ApiState::new(tq.clone(), Default::default(), QueryConfig::default()).with_fanout(fan(nodes)),
            )
        };
        let id = hex::encode(trace_id(1).0);
        let whole = app(vec![n1_url.clone()]);
        let (st, v) = get(&whole, &format!("/api/v1/traces/{id}")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["spans"].as_array().unwrap().len(), 5, "segment and head: {v}");
        assert!(v.get("warnings").is_none(), "{v}");

        let partial = app(vec![n1_url.clone(), silent_url.clone()]);
        let (st, v) = get(&partial, &format!("/api/v1/traces/{id}")).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["spans"].as_array().unwrap().len(), 5, "{v}");
        let w = v["warnings"].to_string();
        assert!(w.contains(&silent_url) && w.contains("did not answer"), "{v}");
        let (st, v) = get(&partial, "/api/v1/search/traces?start=0").await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["traces"].as_array().unwrap().len(), 1, "{v}");
        assert!(v["warnings"].to_string().contains(&silent_url), "{v}");
        let (st, v) = get(&partial, &format!("/jaeger/api/traces/{id}")).await;
        assert_eq!(st, 200, "{v}");
        assert!(v["errors"].to_string().contains(&silent_url), "{v}");

        // A node that is not an ingest node has no internal endpoint.
        let (st, _) = get(&whole, "/internal/v1/head").await;
        assert_eq!(st, 404);
    }

    /// Concurrent queries share a fetch: five refreshes that arrive while
    /// one is in flight cost at most one more fetch per node, and a
    /// refresh that arrives after they all finished fetches again (it must
    /// read what was acknowledged since).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_concurrent_refreshes_share_a_fetch() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let fetches = Arc::new(AtomicUsize::new(0));
        let body = MemoryExport { node_id: "n1".into(), ..Default::default() }.encode();
        let counted = fetches.clone();
        let app = axum::Router::new().route(
            "/internal/v1/head",
            axum::routing::get(move || {
                let (counted, body) = (counted.clone(), body.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    body
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        let (bucket, dq) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = StorageConfig {
            storage_url: Some(format!("file://{}", bucket.path().display())),
            mirror: true,
            ..test_config()
        };
        let q = Storage::open(dq.path(), cfg).unwrap();
        let fan = Arc::new(Fanout::new(IngestNodes::Static(vec![node]), Duration::from_secs(5), None));
        let tenant = TenantId::default();
        let first = {
            let (fan, q, t) = (fan.clone(), q.clone(), tenant.clone());
            tokio::spawn(async move { fan.refresh(&t, &q, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest: Vec<_> = (0..5)
            .map(|_| {
                let (fan, q, t) = (fan.clone(), q.clone(), tenant.clone());
                tokio::spawn(async move { fan.refresh(&t, &q, Duration::from_secs(5)).await })
            })
            .collect();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the first fetch and one shared by the five");
        fan.refresh(&tenant, &q, Duration::from_secs(5)).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }
}
