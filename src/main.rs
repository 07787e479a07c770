//! `skein`: parses the command line and config, wires the crates into one
//! process, and maps the outcome to an exit code.

mod auth;
mod cli;
mod compactor;
mod listen;
mod self_tracing;
mod server;
mod telemetry;
mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use skein_collector::{CollectorConfig, Ingest, MemoryConfig, MemoryLimit};
use skein_query::fanout::{ClusterConfig, Fanout, IngestNodes};
use skein_query::{ApiState, QueryConfig};
use skein_storage::segment::SegmentConfig;
use skein_storage::tenant::{TenantOverrides, Tenants, TenantsConfig};
use skein_storage::wal::WalConfig;
use skein_storage::{CompactionConfig, HeadConfig, StorageConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Auth, AuthConfig};
use crate::listen::ListenAddr;
use crate::self_tracing::{SelfTracing, SelfTracingConfig};
use crate::server::{Listener, ListenerMetrics, Protocol, ServerConfig};
use crate::telemetry::{HttpMetrics, LogFormat};
use crate::tls::{Certificates, TlsFiles};

/// Ingest allocates many small strings per span; glibc's malloc spent about
/// a third of the CPU in a profile of the load benchmark (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "skein", version, about = "Distributed tracing and log backend for OpenTelemetry")]
struct Cli {
    /// Log lines on stderr: `text` (colours only on a terminal) or `json`
    /// (one object per line) [default: text].
    #[arg(long, global = true, env = "SKEIN_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: OTLP receivers, storage, HTTP API and UI.
    Serve(ServeArgs),
    /// Replay a gen_workload.py workload against a server and measure it.
    Loadgen(skein_loadgen::LoadgenArgs),
    /// Show one trace as a waterfall, with its logs under their spans.
    Trace(cli::trace::TraceArgs),
    /// Search traces; prints a table.
    Search(cli::search::SearchArgs),
    /// Search logs, or follow new ones (`--follow`).
    Logs(cli::logs::LogsArgs),
    /// Send a directory of OTLP files to the OTLP/HTTP receiver, resumably.
    Import(cli::import::ImportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    All,
    Ingest,
    Query,
    Compact,
}

/// Every flag also reads `SKEIN_<FLAG>` and the TOML config; flag > env >
/// file > default.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SKEIN_CONFIG")]
    config: Option<PathBuf>,
    /// Where the WAL and segments live [default: ./skein-data].
    #[arg(long, env = "SKEIN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address: `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for
    /// every interface [default: 127.0.0.1:4317].
    #[arg(long, env = "SKEIN_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<ListenAddr>,
    /// OTLP/HTTP listen address: `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for
    /// every interface [default: 127.0.0.1:4318].
    #[arg(long, env = "SKEIN_OTLP_HTTP_ADDR")]
    otlp_http_addr: Option<ListenAddr>,
    /// HTTP API and UI listen address: `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` for
    /// every interface [default: 127.0.0.1:16686].
    #[arg(long, env = "SKEIN_HTTP_ADDR")]
    http_addr: Option<ListenAddr>,
    /// Zipkin v2 receiver (`POST /api/v2/spans`) listen address: `HOST:PORT`,
    /// `[IPv6]:PORT`, or `:PORT` for every interface [default: 127.0.0.1:9411].
    #[arg(long, env = "SKEIN_ZIPKIN_ADDR")]
    zipkin_addr: Option<ListenAddr>,
    /// Which parts this node runs [default: all]: `ingest`, `query` and
    /// `compact` split one deployment over one bucket (needs --storage-url;
    /// `compact` needs an S3 store; docs/scaling.md).
    #[arg(long, env = "SKEIN_ROLE", value_enum)]
    role: Option<Role>,
    /// This node's ID, naming its prefix in the bucket (`nodes/{ID}/`):
    /// 1-64 ASCII letters, digits, `.`, `_`, `-` [default: the hostname].
    #[arg(long, env = "SKEIN_NODE_ID")]
    node_id: Option<String>,
    /// A query node's ingest nodes: `http://HOST:PORT,...` (their
    /// --http-addr), or `dns+http://NAME:PORT` resolved at every query to
    /// every address of NAME (a Kubernetes headless Service).
    #[arg(long, env = "SKEIN_INGEST_NODES")]
    ingest_nodes: Option<String>,
    /// Segment storage: s3://bucket/prefix (AWS_* variables; AWS_ENDPOINT_URL
    /// for another S3 API) or file:///path; <data-dir> then holds the WAL and
    /// a cache [default: <data-dir>/segments].
    #[arg(long, env = "SKEIN_STORAGE_URL")]
    storage_url: Option<String>,
    /// Serve every listener over TLS with this certificate chain (PEM,
    /// server certificate first); needs --tls-key. Reloaded when it changes.
    #[arg(long, env = "SKEIN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SKEIN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Hard limit on resident memory (`1GiB`, `512MiB`); ingest is refused,
    /// retryably, above the soft limit (80 % of it unless
    /// `memory.spike_limit` says otherwise) [default: 1GiB, or less on a
    /// small machine or container].
    #[arg(long, env = "SKEIN_MEMORY_LIMIT")]
    memory_limit: Option<ByteSize>,
    /// Trace Skein's own query, flush and compaction paths
    /// (`[self_tracing] enabled`) [default: false].
    #[arg(long, env = "SKEIN_SELF_TRACING", num_args = 0..=1, default_missing_value = "true")]
    self_tracing: Option<bool>,
    /// Where self-traces go: an OTLP URL (`[self_tracing] endpoint`)
    /// [default: this process's own OTLP/gRPC listener].
    #[arg(long, env = "SKEIN_SELF_TRACING_ENDPOINT")]
    self_tracing_endpoint: Option<String>,
    /// Share of Skein's own traces recorded, 0 to 1; a sampled incoming
    /// `traceparent` is always honoured [default: 1].
    #[arg(long, env = "SKEIN_SELF_TRACING_SAMPLE_RATIO")]
    self_tracing_sample_ratio: Option<f64>,
}

/// The config file. Unknown keys are an error, so a typo is not silently
/// ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    otlp_grpc_addr: Option<ListenAddr>,
    otlp_http_addr: Option<ListenAddr>,
    http_addr: Option<ListenAddr>,
    zipkin_addr: Option<ListenAddr>,
    role: Option<Role>,
    node_id: Option<String>,
    ingest_nodes: Option<String>,
    /// `[cluster]`: a query node's catalog poll and fan-out.
    cluster: ClusterConfig,
    storage_url: Option<String>,
    log_format: Option<LogFormat>,
    /// With object storage: Parquet bytes cached on local disk.
    cache_bytes: Option<u64>,
    /// How long data is kept, counted from when Skein received it ("7d").
    #[serde(with = "humantime_serde")]
    retention: Option<Duration>,
    /// Also delete the oldest segments while all segments take more bytes
    /// than this.
    retention_bytes: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    /// Connection limits and timeouts of the four listeners.
    server: ServerConfig,
    /// The hard limit on resident memory (`--memory-limit`).
    memory_limit: Option<ByteSize>,
    memory: MemoryConfig,
    /// Which settings sized by default from the memory limit the file sets.
    #[serde(skip)]
    explicit: Explicit,
    collector: CollectorConfig,
    head: HeadConfig,
    wal: WalConfig,
    segment: SegmentConfig,
    compaction: CompactionConfig,
    query: QueryConfig,
    /// Tempo's `multitenancy_enabled`: every request names its tenant (by
    /// its token or `X-Scope-OrgID`), and tenants are stored apart.
    multitenancy_enabled: bool,
    /// `[auth]`: bearer tokens for ingest and query.
    auth: AuthConfig,
    /// `[tenants]`.
    tenants: TenantsConfig,
    /// `[overrides.<tenant>]`: per-tenant retention.
    overrides: HashMap<String, TenantOverrides>,
    /// `[self_tracing]`: spans of Skein's own work.
    self_tracing: SelfTracingConfig,
    /// `[alerts]`: rules, receivers and how they are evaluated
    /// (docs/alerts.md).
    alerts: skein_query::alerts::AlertsConfig,
}

/// The settings whose default is a share of the memory limit, as set in
/// the file (otherwise the share applies).
#[derive(Debug, Default)]
struct Explicit {
    head_max_bytes: bool,
    head_max_block_bytes: bool,
    compaction_max_segment_bytes: bool,
    compaction_max_rows: bool,
    segment_index_heap_bytes: bool,
}

impl Explicit {
    fn of(t: &toml::Table) -> Explicit {
        let set = |table: &str, key: &str| t.get(table).and_then(|v| v.get(key)).is_some();
        Explicit {
            head_max_bytes: set("head", "max_bytes"),
            head_max_block_bytes: set("head", "max_block_bytes"),
            compaction_max_segment_bytes: set("compaction", "max_segment_bytes"),
            compaction_max_rows: set("compaction", "max_rows"),
            segment_index_heap_bytes: set("segment", "index_heap_bytes"),
        }
    }
}

#[derive(Debug)]
struct Config {
    role: Role,
    /// Ingest nodes: the node ID (their prefix in the bucket).
    node_id: Option<String>,
    /// Query nodes: where the ingest nodes are.
    ingest_nodes: Option<IngestNodes>,
    cluster: ClusterConfig,
    data_dir: PathBuf,
    otlp_grpc_addr: ListenAddr,
    otlp_http_addr: ListenAddr,
    http_addr: ListenAddr,
    zipkin_addr: ListenAddr,
    storage: StorageConfig,
    collector: CollectorConfig,
    memory: MemoryLimit,
    query: QueryConfig,
    tenants: TenantsConfig,
    overrides: HashMap<String, TenantOverrides>,
    auth: Auth,
    multitenancy_enabled: bool,
    server: ServerConfig,
    tls: Option<TlsFiles>,
    alerts: skein_query::alerts::AlertsConfig,
}

/// A config parse error without the quoted source line toml adds, which
/// may hold a token (`[[auth.tokens]] token = ...`); values the message
/// quotes on a line about a token are elided too.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let (line, about_token) = match e.span() {
        Some(sp) => {
            let start = sp.start.min(text.len());
            let n = text[..start].matches('\n').count() + 1;
            let l = text.lines().nth(n - 1).unwrap_or_default();
            (format!(", line {n}"), l.contains("token"))
        }
        None => (String::new(), false),
    };
    let mut msg = e.message().trim().to_string();
    if about_token {
        msg = msg.split('`').enumerate().map(|(i, part)| if i % 2 == 1 { "…" } else { part }).collect();
    }
    anyhow::anyhow!("parsing config {}{line}: {msg}", path.display())
}

fn read_file_config(path: Option<&Path>) -> Result<FileConfig> {
    Ok(match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            let mut f: FileConfig = toml::from_str(&text).map_err(|e| parse_error(p, &text, &e))?;
            f.explicit = Explicit::of(&toml::from_str(&text)?);
            f
        }
        None => FileConfig::default(),
    })
}

/// `[self_tracing]` with the flags (and their variables) over the file,
/// checked.
///
/// # Errors
/// See [`SelfTracingConfig::check`].
fn self_tracing_config(a: &ServeArgs, file: &FileConfig) -> Result<SelfTracingConfig> {
    let mut c = file.self_tracing.clone();
    c.enabled = a.self_tracing.unwrap_or(c.enabled);
    c.endpoint = a.self_tracing_endpoint.clone().or(c.endpoint);
    c.sample_ratio = a.self_tracing_sample_ratio.unwrap_or(c.sample_ratio);
    let tls = a.tls_cert.is_some() || file.tls_cert.is_some();
    c.check(tls).context("invalid [self_tracing]")?;
    Ok(c)
}

fn build_config(a: ServeArgs, file: FileConfig) -> Result<Config> {
    let role = a.role.or(file.role).unwrap_or(Role::All);
    let data_dir = a.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("skein-data"));
    let storage_url = match a.storage_url.or(file.storage_url) {
        // The default, spelled out.
        Some(url)
            if url.strip_prefix("file://").is_some_and(|p| data_dir.join("segments") == Path::new(p)) =>
        {
            None
        }
        Some(url) if url.starts_with("s3://") || url.starts_with("file://") => Some(url),
        Some(url) => bail!("--storage-url {url:?}: expected s3://bucket/prefix or file:///path"),
        None => None,
    };
    let memory = MemoryConfig { limit: a.memory_limit.or(file.memory_limit), ..file.memory }
        .resolve()
        .map_err(anyhow::Error::msg)
        .context("invalid memory configuration")?;
    let (mut head, mut segment, mut compaction) = (file.head, file.segment, file.compaction);
    if !file.explicit.head_max_bytes {
        head.max_bytes = memory.head_bytes();
    }
    if !file.explicit.head_max_block_bytes {
        // A quarter of the head, whether the head is a share or set.
        head.max_block_bytes = (head.max_bytes / 4).max(1);
    }
    if !file.explicit.compaction_max_segment_bytes {
        compaction.max_segment_bytes = memory.compaction_bytes();
    }
    if !file.explicit.compaction_max_rows {
        compaction.max_rows = memory.compaction_rows();
    }
    if !file.explicit.segment_index_heap_bytes {
        segment.index_heap_bytes = memory.index_heap_bytes();
    }
    let (node_id, ingest_nodes) = cluster_settings(
        role,
        a.node_id.or(file.node_id),
        a.ingest_nodes.or(file.ingest_nodes),
        storage_url.is_some(),
    )?;
    file.cluster.check().map_err(anyhow::Error::msg).context("invalid [cluster]")?;
    if role == Role::Compact && storage_url.as_deref().is_some_and(|u| u.starts_with("file://")) {
        bail!(
            "--role compact needs an S3 store (s3://bucket/prefix): the compactor lease is written with conditional puts (If-None-Match, If-Match), which a file:// store cannot do"
        );
    }
    let storage_url = match (&node_id, storage_url) {
        (Some(n), Some(url)) if role == Role::Ingest => {
            Some(skein_storage::cluster::node_storage_url(&url, n))
        }
        (_, url) => url,
    };
    if role == Role::Ingest {
        // Retention and compaction of the bucket are the compactor's
        // (docs/scaling.md): an ingest node keeps what it uploads.
        compaction.enabled = false;
    }
    if role == Role::Compact
        && compaction.deletion_delay < file.cluster.catalog_poll_interval + file.query.timeout
    {
        // A query node may still read an input this long after its output
        // was committed (docs/storage.md, "The compactor").
        tracing::warn!(
            deletion_delay = ?compaction.deletion_delay,
            catalog_poll_interval = ?file.cluster.catalog_poll_interval,
            query_timeout = ?file.query.timeout,
            "compaction.deletion_delay is shorter than cluster.catalog_poll_interval + query.timeout: a query node may find a compacted input deleted while it still reads it"
        );
    }
    let storage = StorageConfig {
        // A query node and the compactor read every node's prefix.
        mirror: matches!(role, Role::Query | Role::Compact),
        mirror_tenant: None,
        retention_disabled: role == Role::Ingest,
        head,
        wal: file.wal,
        segment,
        retention: file.retention.unwrap_or(Duration::from_secs(7 * 24 * 3600)),
        retention_bytes: file.retention_bytes,
        compaction,
        storage_url,
        storage_options: if role == Role::Compact {
            // Explicitly, so that AWS_CONDITIONAL_PUT in the environment
            // cannot turn the lease's conditional puts off.
            skein_storage::lease::s3_options().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        } else {
            Vec::new()
        },
        cache_bytes: file.cache_bytes,
    };
    storage.check().context("invalid storage configuration")?;
    if !file.multitenancy_enabled && !file.overrides.is_empty() {
        bail!("[overrides.*] are per tenant; set multitenancy_enabled = true to use them");
    }
    let auth = Auth::new(&file.auth, file.multitenancy_enabled).context("invalid [auth]")?;
    file.query.check().map_err(anyhow::Error::msg).context("invalid [query]")?;
    file.server.check(file.query.timeout).context("invalid server configuration")?;
    file.alerts.check(file.multitenancy_enabled).map_err(anyhow::Error::msg).context("invalid [alerts]")?;
    let tls = match (a.tls_cert.or(file.tls_cert), a.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => bail!("--tls-cert needs --tls-key (the certificate's private key)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert (the certificate chain)"),
    };
    Ok(Config {
        role,
        node_id,
        ingest_nodes,
        cluster: file.cluster,
        data_dir,
        otlp_grpc_addr: a.otlp_grpc_addr.or(file.otlp_grpc_addr).unwrap_or(ListenAddr::loopback(4317)),
        otlp_http_addr: a.otlp_http_addr.or(file.otlp_http_addr).unwrap_or(ListenAddr::loopback(4318)),
        http_addr: a.http_addr.or(file.http_addr).unwrap_or(ListenAddr::loopback(16686)),
        // Zipkin's own port, which Envoy, Istio and the Zipkin libraries
        // default to.
        zipkin_addr: a.zipkin_addr.or(file.zipkin_addr).unwrap_or(ListenAddr::loopback(9411)),
        storage,
        collector: file.collector,
        memory,
        query: file.query,
        tenants: file.tenants,
        overrides: file.overrides,
        auth,
        multitenancy_enabled: file.multitenancy_enabled,
        server: file.server,
        tls,
        alerts: file.alerts,
    })
}

/// The node ID and ingest nodes of `role`, checked: split roles need an
/// object store (`has_store`); an ingest node needs a valid node ID (the
/// host name by default); a query node needs its ingest nodes.
fn cluster_settings(
    role: Role,
    node_id: Option<String>,
    ingest_nodes: Option<String>,
    has_store: bool,
) -> Result<(Option<String>, Option<IngestNodes>)> {
    if role == Role::All {
        if ingest_nodes.is_some() {
            bail!("--ingest-nodes is for --role query (a query node fans out to them); this node runs --role all");
        }
        if node_id.is_some() {
            bail!("--node-id (node_id, SKEIN_NODE_ID) names a node of a split deployment (--role ingest|query|compact); this node runs --role all, where it would have no effect");
        }
        return Ok((None, None));
    }
    if !has_store {
        // The compactor's lease needs conditional puts, which file:// lacks.
        let or_file = if role == Role::Compact { "" } else { " (or file:///shared/dir)" };
        bail!(
            "--role {}: split roles share one object store; set --storage-url s3://bucket/prefix{or_file}",
            format!("{role:?}").to_lowercase()
        );
    }
    let node_id = match node_id {
        Some(n) => n,
        None => hostname().context("--node-id is not set and the host name cannot be read")?,
    };
    skein_storage::cluster::check_node_id(&node_id).map_err(|e| anyhow::anyhow!("--node-id: {e}"))?;
    match role {
        Role::Query => {
            let Some(nodes) = ingest_nodes else {
                bail!("--role query needs --ingest-nodes (http://HOST:PORT,... or dns+http://NAME:PORT): the ingest nodes hold the data not yet uploaded");
            };
            Ok((Some(node_id), Some(IngestNodes::parse(&nodes).map_err(anyhow::Error::msg)?)))
        }
        _ => {
            if ingest_nodes.is_some() {
                bail!("--ingest-nodes is for --role query");
            }
            Ok((Some(node_id), None))
        }
    }
}

/// The host name (Linux: the kernel's, as `hostname` prints it).
fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME").map_err(std::io::Error::other))?;
    Ok(h.trim().to_string())
}

/// mimalloc 3's `purge_delay`: `mi_option_purge_delay` in its
/// `mimalloc.h` (`mi_option_e`; the crate does not export the options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed memory back to the system after 10 ms instead of mimalloc
/// 3's default of a second (10 ms is mimalloc 2's default). Ingest frees
/// decoded requests and flushed blocks continuously; held for a second,
/// they are resident beside their replacements, and the flat-out test at a
/// 256 MiB limit (tests/e2e/overload.rs) peaked 36 MiB higher (243 against
/// 207 MiB). `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists (mimalloc's option setters are not thread-safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}

fn main() -> Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            // The file is read before logging starts, since it may set the
            // log format; its errors go to stderr as the exit error.
            let file = read_file_config(args.config.as_deref())?;
            // Before logging, whose subscriber carries its layer.
            let st = self_tracing_config(&args, &file)?;
            let st = st.enabled.then(|| SelfTracing::new(st));
            telemetry::init_logging(cli.log_format.or(file.log_format).unwrap_or_default(), st.as_ref());
            let cfg = build_config(args, file)?;
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(cfg, st))
        }
        Command::Loadgen(args) => {
            telemetry::init_logging(cli.log_format.unwrap_or_default(), None);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(skein_loadgen::run(args))
        }
        Command::Trace(args) => cli::finish(cli::trace::run(&args)),
        Command::Search(args) => cli::finish(cli::search::run(&args)),
        Command::Logs(args) => cli::finish(cli::logs::run(&args)),
        Command::Import(args) => cli::finish(cli::import::run(&args)),
    }
}

/// A query node's catalog poll of the bucket ([`Tenants::poll_catalogs`]):
/// at once, then every `interval`, until `stop`. A failed poll is logged and
/// retried at the next turn; `/readyz` says when the last one succeeded.
async fn poll_catalogs(tenants: Arc<Tenants>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let t = tenants.clone();
        match tokio::task::spawn_blocking(move || t.poll_catalogs()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "catalog poll of the bucket failed; will retry"),
            Err(e) => tracing::error!(error = %e, "catalog poll panicked; will retry"),
        }
    }
}

/// Binds `addr` (each address it resolves to in turn, until one binds).
async fn bind(addr: &ListenAddr, what: &str) -> Result<TcpListener> {
    let addrs = addr.resolve().map_err(|e| anyhow::anyhow!("{what} address {addr}: {e}"))?;
    server::bind(&addrs).with_context(|| format!("binding {what} on {addr}"))
}

async fn shutdown_signal(tx: watch::Sender<bool>, st: Option<Arc<SelfTracing>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    // While the listeners still take them: spans sent to this process.
    if let Some(st) = st {
        let _ = tokio::task::spawn_blocking(move || st.flush()).await;
    }
    let _ = tx.send(true);
}

async fn serve(cfg: Config, self_tracing: Option<SelfTracing>) -> Result<()> {
    let self_tracing = self_tracing.map(Arc::new);
    let nofile = server::raise_nofile_limit();
    const LISTENERS: u64 = 4;
    let max_connections = match cfg.server.max_connections {
        Some(n) => {
            server::check_max_connections(n, nofile, LISTENERS);
            n
        }
        None => server::default_max_connections(nofile, LISTENERS),
    };
    // Before binding, so a bad certificate stops the start with its reason.
    let certs = cfg.tls.clone().map(Certificates::load).transpose()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let tenants =
        Tenants::open(&cfg.data_dir, cfg.storage.clone(), cfg.tenants.clone(), cfg.overrides.clone())
            .with_context(|| format!("opening storage in {}", cfg.data_dir.display()))?;
    // Before the listeners: a store without conditional puts stops the start.
    let lease = match (cfg.role, &cfg.node_id) {
        (Role::Compact, Some(node)) => {
            Some(compactor::start_lease(&tenants, node, &cfg.storage.compaction).await?)
        }
        _ => None,
    };
    let ingest = Ingest::new(tenants.clone(), cfg.collector.clone()).with_memory_limit(cfg.memory);
    let auth = Arc::new(cfg.auth);
    for w in auth.warnings() {
        tracing::warn!("{w}");
    }
    if !cfg.multitenancy_enabled && cfg.data_dir.join("tenants").is_dir() {
        tracing::warn!(
            dir = %cfg.data_dir.join("tenants").display(),
            "multitenancy_enabled is false, so the tenants' data in this directory is neither served nor kept by retention; set multitenancy_enabled = true to serve it"
        );
    }
    tracing::info!(
        hard = cfg.memory.hard,
        soft = cfg.memory.soft,
        head_max_bytes = cfg.storage.head.max_bytes,
        inflight_bytes = ingest.inflight_budget(),
        "memory limit"
    );

    let mut registry = prometheus_client::registry::Registry::default();
    tenants.metrics().register(&mut registry);
    ingest.metrics.register(&mut registry);
    telemetry::register_process(&mut registry);
    let http_metrics = HttpMetrics::register(&mut registry);
    let listener_metrics = ListenerMetrics::register(&mut registry);
    if let Some(st) = &self_tracing {
        st.metrics.register(&mut registry);
    }
    let alert_metrics = skein_query::alerts::AlertMetrics::register(&mut registry);
    let lease_held = (cfg.role == Role::Compact).then(|| compactor::register(&mut registry));
    let mut api = ApiState::new(tenants.clone(), registry, cfg.query.clone());
    // A query node and the compactor run no ingest listener (no WAL).
    let ingests = !matches!(cfg.role, Role::Query | Role::Compact);
    match cfg.role {
        Role::Ingest => api = api.with_node_id(cfg.node_id.clone().unwrap_or_default()),
        Role::Query => {
            let token = match &cfg.cluster.fanout_token_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("reading cluster.fanout_token_file {}", p.display()))?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let nodes = cfg.ingest_nodes.clone().context("query node without ingest nodes")?;
            api = api.with_fanout(Arc::new(Fanout::new(nodes, cfg.cluster.fanout_timeout, token)));
        }
        _ => {}
    }

    // A query node runs no ingest listener (it has no WAL).
    let grpc_l = if ingests { Some(bind(&cfg.otlp_grpc_addr, "OTLP/gRPC").await?) } else { None };
    let otlp_http_l = if ingests { Some(bind(&cfg.otlp_http_addr, "OTLP/HTTP").await?) } else { None };
    let http_l = bind(&cfg.http_addr, "HTTP").await?;
    let zipkin_l = if ingests { Some(bind(&cfg.zipkin_addr, "Zipkin").await?) } else { None };
    let alerts = {
        let scheme = if certs.is_some() { "https" } else { "http" };
        let url = cfg.alerts.external_url.clone().unwrap_or_else(|| {
            format!(
                "{scheme}://{}",
                http_l.local_addr().map_or_else(|_| cfg.http_addr.to_string(), |a| a.to_string())
            )
        });
        let file = skein_storage::state::StateFile::new(&cfg.data_dir.join("alerts"), "state.json");
        skein_query::alerts::Alerts::new(
            cfg.alerts.clone(),
            cfg.multitenancy_enabled,
            api.clone(),
            file,
            &url,
            alert_metrics,
        )
        .map_err(anyhow::Error::msg)
        .context("alerting")?
    };
    let addr = |l: &Option<TcpListener>| -> Result<String> {
        Ok(match l {
            Some(l) => l.local_addr()?.to_string(),
            None => "-".into(),
        })
    };
    // Machine-readable, for scripts and tests that bind port 0 (`-`: not
    // listening in this role).
    println!(
        "skein ready otlp_grpc={} otlp_http={} http={} zipkin={} role={}",
        addr(&grpc_l)?,
        addr(&otlp_http_l)?,
        http_l.local_addr()?,
        addr(&zipkin_l)?,
        format!("{:?}", cfg.role).to_lowercase()
    );
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        role = ?cfg.role,
        node_id = cfg.node_id.as_deref().unwrap_or("-"),
        otlp_grpc = %addr(&grpc_l)?,
        otlp_http = %addr(&otlp_http_l)?,
        http = %http_l.local_addr()?,
        zipkin = %addr(&zipkin_l)?,
        tls = certs.is_some(),
        max_connections,
        open_file_limit = nofile,
        "listening"
    );

    if let Some(st) = &self_tracing {
        // A query node has no OTLP listener of its own to export to.
        let own = match &grpc_l {
            Some(l) => l.local_addr()?,
            None if st.has_endpoint() => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            None => anyhow::bail!(
                "self-tracing on a query node needs self_tracing.endpoint: it has no OTLP listener"
            ),
        };
        let url = st.start(own).context("starting self-tracing")?;
        tracing::info!(endpoint = %url, "self-tracing: query, flush and compaction spans are exported");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(stop_tx, self_tracing.clone()));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let tls_for = |alpn: &[&[u8]]| certs.as_ref().map(|c| c.server_config(alpn)).transpose();
    let listener = |name, tcp, protocol, tls| Listener {
        name,
        tcp,
        protocol,
        max_connections,
        config: cfg.server.clone(),
        tls,
        metrics: listener_metrics.clone(),
    };
    let http_l = listener("http", http_l, Protocol::Http, tls_for(&[b"h2", b"http/1.1"])?);
    if let Some(c) = &certs {
        tokio::spawn(c.clone().watch(cfg.server.tls_reload_interval, stop_rx.clone()));
    }

    // WAL replay runs while the API already answers (readyz says 503).
    let replay = {
        let t = tenants.clone();
        tokio::task::spawn_blocking(move || t.replay())
    };

    let mut servers = Vec::new();
    if let Some(l) = grpc_l {
        let grpc_l = listener("otlp_grpc", l, Protocol::Grpc, tls_for(&[b"h2"])?);
        let app = skein_collector::grpc_routes(ingest.clone())
            .into_axum_router()
            .layer(tower::util::MapResponseLayer::new(skein_collector::normalize_grpc_status));
        let rx = stop_rx.clone();
        let app =
            app.layer(axum::middleware::from_fn_with_state((auth.clone(), ingest.clone()), auth::grpc_layer));
        servers.push(("OTLP/gRPC server", tokio::spawn(grpc_l.serve(app, stopped(rx)))));
    }
    if let Some(l) = otlp_http_l {
        let otlp_http_l = listener("otlp_http", l, Protocol::Http, tls_for(&[b"h2", b"http/1.1"])?);
        let app = skein_collector::router(ingest.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                (auth.clone(), ingest.clone()),
                auth::otlp_http_layer,
            ))
            .route_layer(axum::middleware::from_fn_with_state(http_metrics.clone(), telemetry::track));
        let rx = stop_rx.clone();
        servers.push(("OTLP/HTTP server", tokio::spawn(otlp_http_l.serve(app, stopped(rx)))));
    }
    if let Some(lease) = &lease {
        // The compactor answers health and metrics only.
        let app = compactor::router(tenants.clone(), api.registry.clone(), lease.held())
            .route_layer(axum::middleware::from_fn_with_state(auth.clone(), auth::query_layer))
            .route_layer(axum::middleware::from_fn_with_state(http_metrics.clone(), telemetry::track));
        let rx = stop_rx.clone();
        servers.push(("HTTP server", tokio::spawn(http_l.serve(app, stopped(rx)))));
    } else {
        let app = skein_query::router(api)
            .merge(skein_query::alerts::router(alerts.clone()))
            .route_layer(axum::middleware::from_fn_with_state(auth.clone(), auth::query_layer))
            .route_layer(axum::middleware::from_fn_with_state(http_metrics.clone(), telemetry::track));
        // Only on the query listener: the ingest listeners' requests must
        // not be traced (see self_tracing.rs).
        let app = if self_tracing.is_some() {
            app.route_layer(axum::middleware::from_fn(self_tracing::server_span))
        } else {
            app
        };
        let app = app.merge(skein_ui::router()).layer(tower_http::compression::CompressionLayer::new());
        let rx = stop_rx.clone();
        servers.push(("HTTP server", tokio::spawn(http_l.serve(app, stopped(rx)))));
    }
    if let Some(l) = zipkin_l {
        let zipkin_l = listener("zipkin", l, Protocol::Http, tls_for(&[b"h2", b"http/1.1"])?);
        let app = skein_collector::zipkin_router(ingest.clone())
            .route_layer(axum::middleware::from_fn_with_state(
                (auth.clone(), ingest.clone()),
                auth::zipkin_layer,
            ))
            .route_layer(axum::middleware::from_fn_with_state(http_metrics.clone(), telemetry::track));
        let rx = stop_rx.clone();
        servers.push(("Zipkin server", tokio::spawn(zipkin_l.serve(app, stopped(rx)))));
    }

    replay.await?.context("WAL replay")?;

    // Flush, retention and compaction in the background until stopped; a
    // query node polls the bucket's catalog instead.
    let flusher = if let (Some(lease), Some(gauge)) = (lease, lease_held) {
        tokio::spawn(compactor::run(
            tenants.clone(),
            lease,
            gauge,
            cfg.storage.compaction.clone(),
            cfg.cluster.catalog_poll_interval,
            stop_rx.clone(),
        ))
    } else if cfg.role == Role::Query {
        tokio::spawn(poll_catalogs(tenants.clone(), cfg.cluster.catalog_poll_interval, stop_rx.clone()))
    } else {
        tokio::spawn(tenants.clone().run_maintenance(stop_rx.clone()))
    };
    // Rules are evaluated where every node's data is read: an ingest node
    // holds its own part only, and the compactor answers no queries
    // (docs/alerts.md, "Split deployments"). A shared config file is then
    // safe on every role.
    let evaluates = matches!(cfg.role, Role::All | Role::Query);
    let alerting =
        (evaluates && !alerts.is_empty()).then(|| tokio::spawn(alerts.clone().run(stop_rx.clone())));

    for (what, h) in servers {
        h.await.context(what)?;
    }
    flusher.await?;
    if let Some(a) = alerting {
        a.await?;
    }
    // Everything acknowledged is in the WAL already; flushing it all now
    // makes the next start fast.
    // A flush that fails (a full disk, say) loses nothing: the records stay
    // in the WAL and the next start replays them, so the stop is still clean.
    for (tenant, s) in tenants.all() {
        match tokio::task::spawn_blocking(move || s.flush(true)).await? {
            Ok(st) => tracing::info!(%tenant, traces = st.traces, spans = st.spans, "final flush done"),
            Err(e) => tracing::warn!(
                %tenant,
                error = %e,
                "final flush failed; every acknowledged record is safe in the WAL and is replayed at the next start"
            ),
        }
    }
    if let Some(st) = self_tracing {
        tokio::task::spawn_blocking(move || st.shutdown()).await?;
    }
    tracing::info!("exiting");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every address flag takes the forms users type, and the log format
    /// comes from the flag (after the subcommand too) or the config file.
    #[test]
    fn test_cli_and_file_forms() {
        let cli = Cli::try_parse_from([
            "skein",
            "serve",
            "--http-addr",
            ":16686",
            "--otlp-grpc-addr",
            "localhost:4317",
            "--otlp-http-addr",
            "[::1]:4318",
            "--log-format",
            "json",
            "--zipkin-addr",
            ":9411",
        ])
        .unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        let Command::Serve(a) = cli.command else { panic!("not serve") };
        assert_eq!(a.http_addr, Some(ListenAddr::AllInterfaces(16686)));
        assert_eq!(a.otlp_grpc_addr, Some(ListenAddr::Host("localhost".into(), 4317)));
        assert_eq!(a.otlp_http_addr, Some(ListenAddr::Socket("[::1]:4318".parse().unwrap())));
        assert_eq!(a.zipkin_addr, Some(ListenAddr::AllInterfaces(9411)));
        let err = Cli::try_parse_from(["skein", "serve", "--http-addr", "16686"]).unwrap_err().to_string();
        assert!(err.contains("has no host"), "{err}");

        let f: FileConfig = toml::from_str("log_format = \"json\"\nhttp_addr = \":16686\"").unwrap();
        assert_eq!(f.log_format, Some(LogFormat::Json));
        assert_eq!(f.http_addr, Some(ListenAddr::AllInterfaces(16686)));
        assert!(toml::from_str::<FileConfig>("http_addr = \"16686\"").is_err());

        // The Zipkin listener: file, then Zipkin's own port by default.
        let serve = |argv: &[&str]| {
            let Command::Serve(a) = Cli::try_parse_from(argv).unwrap().command else { panic!("not serve") };
            a
        };
        let f: FileConfig = toml::from_str("zipkin_addr = \":9412\"").unwrap();
        let cfg = build_config(serve(&["skein", "serve"]), f).unwrap();
        assert_eq!(cfg.zipkin_addr, ListenAddr::AllInterfaces(9412));
        let cfg = build_config(serve(&["skein", "serve"]), FileConfig::default()).unwrap();
        assert_eq!(cfg.zipkin_addr, ListenAddr::loopback(9411));
    }

    /// TLS needs both files; `[server]` limits come from the file and are
    /// checked against the rest of the config.
    #[test]
    fn test_tls_and_server_settings() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["skein", "serve"];
            argv.extend_from_slice(extra);
            let Command::Serve(a) = Cli::try_parse_from(argv).unwrap().command else { panic!("not serve") };
            a
        };
        let err = build_config(args(&["--tls-cert", "c.pem"]), FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--tls-cert needs --tls-key"), "{err}");
        let file: FileConfig = toml::from_str("tls_key = \"k.pem\"\n[server]\nmax_connections = 10").unwrap();
        let cfg = build_config(args(&["--tls-cert", "c.pem"]), file).unwrap();
        assert_eq!(cfg.tls, Some(TlsFiles { cert: "c.pem".into(), key: "k.pem".into() }));
        assert_eq!(cfg.server.max_connections, Some(10));
        let file: FileConfig = toml::from_str("[server]\nrequest_timeout = \"10s\"").unwrap();
        let err = format!("{:#}", build_config(args(&[]), file).unwrap_err());
        assert!(err.contains("longer than query.timeout"), "{err}");
    }

    /// Issue 10 item 2: `--memory-limit` and `memory_limit` take sizes with
    /// units; the head, in-flight and compaction settings default to their
    /// share of it unless the file sets them; nonsense is refused.
    #[test]
    fn test_memory_limit_and_its_shares() {
        let args = |extra: &[&str]| {
            let mut v = vec!["skein", "serve"];
            v.extend(extra);
            let Command::Serve(a) = Cli::try_parse_from(v).unwrap().command else { panic!("not serve") };
            a
        };
        let file = |text: &str| {
            let mut f: FileConfig = toml::from_str(text).unwrap();
            f.explicit = Explicit::of(&toml::from_str(text).unwrap());
            f
        };
        let c = build_config(args(&["--memory-limit", "256MiB"]), file("memory_limit = \"1GiB\"")).unwrap();
        assert_eq!((c.memory.hard, c.memory.soft), (256 << 20, (256 << 20) - (256 << 20) / 5));
        // Shares of the limit less the process's 48 MiB base: 208 MiB.
        assert_eq!(c.storage.head.max_bytes, (208 << 20) / 16 * 3);
        assert_eq!(c.storage.head.max_block_bytes, (208 << 20) / 16 * 3 / 4);
        assert_eq!(c.storage.compaction.max_segment_bytes, 208 << 15);
        assert_eq!(c.storage.compaction.max_rows, 208 << 8);
        let c = build_config(
            args(&[]),
            file("memory_limit = \"1GiB\"\n[memory]\nspike_limit = \"100MiB\"\n[head]\nmax_bytes = 1000"),
        )
        .unwrap();
        assert_eq!((c.memory.hard, c.memory.soft), (1 << 30, (1 << 30) - (100 << 20)));
        assert_eq!(c.storage.head.max_bytes, 1000, "set in the file: kept");
        assert_eq!(c.storage.head.max_block_bytes, 250, "a quarter of the head as set");
        let err = build_config(args(&["--memory-limit", "1MiB"]), FileConfig::default()).unwrap_err();
        assert!(format!("{err:#}").contains("minimum"), "{err:#}");
        assert!(Cli::try_parse_from(["skein", "serve", "--memory-limit", "lots"]).is_err());
        assert!(toml::from_str::<FileConfig>("memory_limit = \"lots\"").is_err());
    }

    /// Issue 14: split roles need an object store, an ingest node writes
    /// under its own prefix, a query node needs its ingest nodes, node IDs
    /// are checked; the compactor reads every prefix (a mirror), asks for
    /// conditional puts, and refuses a store without them (`file://`).
    #[test]
    fn test_roles() {
        let args = |extra: &[&str]| {
            let mut v = vec!["skein", "serve"];
            v.extend(extra);
            let Command::Serve(a) = Cli::try_parse_from(v).unwrap().command else { panic!("not serve") };
            a
        };
        let err =
            |extra: &[&str]| format!("{:#}", build_config(args(extra), FileConfig::default()).unwrap_err());
        assert!(err(&["--role", "ingest", "--node-id", "n1"]).contains("--storage-url"));
        let s3 = ["--storage-url", "s3://b/p"];
        assert!(err(&["--role", "compact", "--node-id", "c1"]).contains("--storage-url"));
        let e = err(&["--role", "compact", "--node-id", "c1", "--storage-url", "file:///tmp/bucket"]);
        assert!(e.contains("conditional puts"), "{e}");
        assert!(err(&["--role", "compact", "--node-id", "c/1", s3[0], s3[1]]).contains("--node-id"));
        assert!(err(&["--role", "compact", "--ingest-nodes", "http://a:1", s3[0], s3[1]])
            .contains("--role query"));
        let c = build_config(
            args(&["--role", "compact", s3[0], s3[1]]),
            toml::from_str(
                "node_id = \"c1\"\n[cluster]\ncatalog_poll_interval = \"1s\"\n[compaction]\ninterval = \"2s\"\nlease_duration = \"3s\"\nlease_retry_interval = \"500ms\"\ndeletion_delay = \"4s\"\nmin_age = \"1s\"",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!((c.role, c.node_id.as_deref()), (Role::Compact, Some("c1")));
        assert_eq!(c.storage.storage_url.as_deref(), Some("s3://b/p"), "the shared prefix");
        assert!(c.storage.mirror && !c.storage.retention_disabled);
        assert!(c.storage.storage_options.contains(&("aws_conditional_put".into(), "etag".into())));
        let k = &c.storage.compaction;
        assert_eq!(
            (k.interval, k.lease_duration, k.lease_retry_interval, k.deletion_delay, k.min_age),
            (
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_millis(500),
                Duration::from_secs(4),
                Duration::from_secs(1)
            )
        );
        let e = format!(
            "{:#}",
            build_config(
                args(&["--role", "compact", "--node-id", "c1", s3[0], s3[1]]),
                toml::from_str("[compaction]\nlease_duration = \"100ms\"").unwrap()
            )
            .unwrap_err()
        );
        assert!(e.contains("compaction.lease_duration"), "{e}");
        assert!(err(&["--role", "query", "--node-id", "q", s3[0], s3[1]]).contains("--ingest-nodes"));
        assert!(err(&["--role", "ingest", "--node-id", "a/b", s3[0], s3[1]]).contains("--node-id"));
        assert!(err(&["--ingest-nodes", "http://a:1"]).contains("--role query"));
        assert!(err(&["--node-id", "n1"]).contains("--role all"));
        assert!(!err(&["--role", "compact"]).contains("file://"), "the compactor cannot use file://");
        let c =
            build_config(args(&["--role", "ingest", "--node-id", "n1", s3[0], s3[1]]), FileConfig::default())
                .unwrap();
        assert_eq!(c.storage.storage_url.as_deref(), Some("s3://b/p/nodes/n1"));
        assert!(c.storage.retention_disabled && !c.storage.compaction.enabled && !c.storage.mirror);
        let c = build_config(
            args(&["--role", "query", "--ingest-nodes", "dns+http://ingest:16686", s3[0], s3[1]]),
            toml::from_str("node_id = \"q1\"\n[cluster]\ncatalog_poll_interval = \"2s\"").unwrap(),
        )
        .unwrap();
        assert_eq!(c.storage.storage_url.as_deref(), Some("s3://b/p"));
        assert!(c.storage.mirror);
        assert_eq!(c.cluster.catalog_poll_interval, Duration::from_secs(2));
        assert_eq!(c.ingest_nodes, Some(IngestNodes::Dns { host: "ingest".into(), port: 16686 }));
        let c = build_config(args(&[]), FileConfig::default()).unwrap();
        assert_eq!((c.role, c.storage.mirror, c.storage.retention_disabled), (Role::All, false, false));
    }

    /// `[self_tracing]`: flags (and their variables) over the file, the
    /// file over the defaults; nonsense refused with its key named.
    #[test]
    fn test_self_tracing_settings() {
        let args = |extra: &[&str]| {
            let mut v = vec!["skein", "serve"];
            v.extend(extra);
            let Command::Serve(a) = Cli::try_parse_from(v).unwrap().command else { panic!("not serve") };
            a
        };
        let file = |text: &str| toml::from_str::<FileConfig>(text).unwrap();
        let c = self_tracing_config(&args(&[]), &FileConfig::default()).unwrap();
        assert!(!c.enabled);
        assert_eq!((c.endpoint, c.sample_ratio, c.service_name.as_str()), (None, 1.0, "skein"));
        let f = file(
            "[self_tracing]\nenabled = true\nendpoint = \"http://a:4317\"\nsample_ratio = 0.5\nmax_queue_size = 64\nmax_export_batch_size = 8",
        );
        let c = self_tracing_config(&args(&[]), &f).unwrap();
        assert_eq!((c.enabled, c.endpoint.as_deref(), c.sample_ratio), (true, Some("http://a:4317"), 0.5));
        assert_eq!(c.max_queue_size, 64);
        let c = self_tracing_config(
            &args(&[
                "--self-tracing=false",
                "--self-tracing-endpoint",
                "http://b:4317",
                "--self-tracing-sample-ratio",
                "0.1",
            ]),
            &f,
        )
        .unwrap();
        assert_eq!((c.enabled, c.endpoint.as_deref(), c.sample_ratio), (false, Some("http://b:4317"), 0.1));
        assert!(self_tracing_config(&args(&["--self-tracing"]), &FileConfig::default()).unwrap().enabled);
        let err = self_tracing_config(&args(&["--self-tracing-sample-ratio", "2"]), &f).unwrap_err();
        assert!(format!("{err:#}").contains("self_tracing.sample_ratio"), "{err:#}");
        // Its own listener under TLS cannot be reached by the exporter.
        let err =
            self_tracing_config(&args(&["--self-tracing", "--tls-cert", "c.pem"]), &FileConfig::default())
                .unwrap_err();
        assert!(format!("{err:#}").contains("TLS"), "{err:#}");
        assert!(toml::from_str::<FileConfig>("[self_tracing]\nenabeld = true").is_err());
    }

    /// A config error never shows a token (QA: toml quoted the line).
    #[test]
    fn test_config_errors_hide_tokens() {
        let dir = tempfile::tempdir().unwrap();
        for text in
            ["[[auth.tokens]]\ntoken = \"SUPERSECRET-abc\" x\n", "[[auth.tokens]]\ntoken = 123456789\n"]
        {
            let p = dir.path().join("c.toml");
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", read_file_config(Some(&p)).unwrap_err());
            assert!(!e.contains("SUPERSECRET") && !e.contains("123456789"), "{e}");
            assert!(e.contains("line 2"), "{e}");
        }
    }
}
