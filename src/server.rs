//! The serve loop of every listener (OTLP/gRPC, OTLP/HTTP, the HTTP API, Zipkin):
//! a connection cap, header-read, idle and request timeouts, HTTP/2 stream
//! and keepalive limits, TCP keepalive, optional TLS, and a graceful drain.
//!
//! One loop serves them all, on hyper-util's auto builder (HTTP/1 and
//! HTTP/2; HTTP/2 only for gRPC, as tonic's own server does), so a limit
//! means the same thing on each port. The settings follow the OpenTelemetry
//! Collector's `confighttp` and `configgrpc` names.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{bail, Result};
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// `[server]`: limits shared by the four listeners. Every duration must be
/// more than zero.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Open connections per listener; past it a listener stops accepting
    /// (new clients wait in the kernel's backlog until one closes), as Go's
    /// `netutil.LimitListener`. Unset: derived from the file-descriptor
    /// limit, see [`default_max_connections`].
    pub(crate) max_connections: Option<usize>,
    /// Time for a client to send an HTTP/1 request's headers (the
    /// Collector's `read_header_timeout`), counted from when hyper starts
    /// waiting for them, so it also bounds the wait for the next request on
    /// a kept-alive connection; and time to finish the TLS handshake.
    /// HTTP/2 has no per-request equivalent in hyper: a client that never
    /// completes a request is ended by `idle_timeout`.
    #[serde(with = "humantime_serde")]
    pub(crate) read_header_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2 with a GOAWAY), the Collector's `idle_timeout` and gRPC's
    /// `max_connection_idle`.
    #[serde(with = "humantime_serde")]
    pub(crate) idle_timeout: Duration,
    /// A request not answered within this time gets HTTP 503 or gRPC
    /// DEADLINE_EXCEEDED, both retryable; covers reading the body. Longer
    /// than `query.timeout`, so a slow query gets its own 504 first.
    #[serde(with = "humantime_serde")]
    pub(crate) request_timeout: Duration,
    /// HTTP/2 streams (requests) one connection may have open at once
    /// (the Collector's `max_concurrent_streams`); more are refused by the
    /// client's HTTP/2 stack, which queues them.
    pub(crate) max_concurrent_streams: u32,
    /// TCP keepalive probes on accepted connections start after this much
    /// silence (Go's `net.ListenConfig` default, 15 s), so dead peers free
    /// their slot.
    #[serde(with = "humantime_serde")]
    pub(crate) tcp_keepalive: Duration,
    /// HTTP/2 PING keepalive (the Collector's `keepalive.server_parameters`).
    pub(crate) keepalive: KeepaliveConfig,
    /// How often the TLS certificate and key files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub(crate) tls_reload_interval: Duration,
}

/// `[server.keepalive]`: HTTP/2 PINGs a server sends on a quiet connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KeepaliveConfig {
    /// A PING is sent after this long without a frame from the client.
    #[serde(with = "humantime_serde")]
    pub(crate) time: Duration,
    /// The connection is closed if the PING is not answered within this.
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: None,
            read_header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            tcp_keepalive: Duration::from_secs(15),
            keepalive: KeepaliveConfig::default(),
            tls_reload_interval: Duration::from_secs(5),
        }
    }
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        // gRPC's own default timeout; the interval is shorter than its 2 h
        // so a vanished peer mid-request is noticed within about a minute.
        KeepaliveConfig { time: Duration::from_secs(60), timeout: Duration::from_secs(20) }
    }
}

impl ServerConfig {
    /// Explains settings that cannot work.
    ///
    /// # Errors
    /// A zero duration, cap or stream limit, or a `request_timeout` not
    /// longer than `query_timeout`.
    pub(crate) fn check(&self, query_timeout: Duration) -> Result<()> {
        for (name, d) in [
            ("read_header_timeout", self.read_header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
            ("tcp_keepalive", self.tcp_keepalive),
            ("keepalive.time", self.keepalive.time),
            ("keepalive.timeout", self.keepalive.timeout),
            ("tls_reload_interval", self.tls_reload_interval),
        ] {
            if d.is_zero() {
                bail!("server.{name} must be more than 0");
            }
        }
        if self.max_connections == Some(0) {
            bail!("server.max_connections must be at least 1 (leave it out to derive it from the file-descriptor limit)");
        }
        if self.max_concurrent_streams == 0 {
            bail!("server.max_concurrent_streams must be at least 1");
        }
        if self.request_timeout <= query_timeout {
            bail!(
                "server.request_timeout ({}) must be longer than query.timeout ({}), so a slow query answers 504 with its reason",
                humantime::format_duration(self.request_timeout),
                humantime::format_duration(query_timeout)
            );
        }
        Ok(())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as Go's runtime and
/// most servers do (the soft limit is often 1024 for compatibility with
/// `select`, which Skein does not use), and returns the soft limit now in
/// force. If it cannot be read, 1024 is assumed.
pub(crate) fn raise_nofile_limit() -> u64 {
    // rlimit knows the platforms' quirks (macOS caps the soft limit at
    // kern.maxfilesperproc, whatever the hard limit says).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(soft, error = %e, "cannot raise the open-file limit");
            soft
        }
    }
}

/// The connection cap of each of `listeners` listeners when
/// `server.max_connections` is not set: half of the `nofile` descriptors are
/// kept for storage (WAL, segment files, index files, object-store sockets),
/// the other half shared by the listeners. With the common soft limit of
/// 1024 and four listeners that is 128 per listener; with 1,048,576, 131,072.
pub(crate) fn default_max_connections(nofile: u64, listeners: u64) -> usize {
    usize::try_from(nofile / 2 / listeners.max(1)).unwrap_or(usize::MAX).max(1)
}

/// Warns when an explicit cap leaves storage fewer than a quarter of the
/// descriptors.
pub(crate) fn check_max_connections(cap: usize, nofile: u64, listeners: u64) {
    let used = (cap as u64).saturating_mul(listeners);
    if used.saturating_mul(4) > nofile.saturating_mul(3) {
        tracing::warn!(
            max_connections = cap,
            listeners,
            nofile,
            "server.max_connections on every listener could use more than three quarters of the open-file limit; \
             storage may fail with \"Too many open files\" under a connection flood"
        );
    }
}

/// Connections the kernel completes and queues while a listener is at its
/// cap (the kernel clamps it to `net.core.somaxconn`, as Go's listeners
/// ask for); std's 128 would make clients past the cap time out early.
const BACKLOG: u32 = 4096;

/// Binds the first of `addrs` that binds, with [`BACKLOG`] and
/// `SO_REUSEADDR` (as std does on Unix, so a restart does not wait for
/// TIME_WAIT).
///
/// # Errors
/// The last address's error when none binds.
pub(crate) fn bind(addrs: &[SocketAddr]) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to bind");
    for a in addrs {
        let sock =
            if a.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        match sock.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(*a)?;
            s.listen(BACKLOG)
        }) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What a listener speaks, for its HTTP settings and its timeout answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// gRPC: HTTP/2 only (prior knowledge or ALPN `h2`).
    Grpc,
    /// HTTP/1.1 and HTTP/2.
    Http,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabel {
    listener: String,
    timeout: &'static str,
}

/// `/metrics` of the listeners, labelled `listener` = `otlp_grpc`,
/// `otlp_http`, `http` or `zipkin`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListenerMetrics {
    connections: Family<ListenerLabel, Gauge>,
    max_connections: Family<ListenerLabel, Gauge>,
    limit_reached: Family<ListenerLabel, Counter>,
    timeouts: Family<TimeoutLabel, Counter>,
}

impl ListenerMetrics {
    /// Registers `skein_server_connections`, `skein_server_max_connections`,
    /// `skein_server_connection_limit_reached_total` and
    /// `skein_server_timeouts_total` (label `timeout` = `read_header`,
    /// `tls_handshake`, `idle` or `request`).
    pub(crate) fn register(r: &mut Registry) -> Self {
        let m = ListenerMetrics::default();
        r.register("skein_server_connections", "Open client connections per listener", m.connections.clone());
        r.register(
            "skein_server_max_connections",
            "Connection cap per listener (server.max_connections)",
            m.max_connections.clone(),
        );
        r.register(
            "skein_server_connection_limit_reached",
            "Times a listener stopped accepting because it was at server.max_connections",
            m.limit_reached.clone(),
        );
        r.register(
            "skein_server_timeouts",
            "Connections closed or requests answered by a server timeout",
            m.timeouts.clone(),
        );
        m
    }

    fn timeout(&self, listener: &str, timeout: &'static str) {
        self.timeouts.get_or_create(&TimeoutLabel { listener: listener.to_string(), timeout }).inc();
    }
}

/// One bound listener and how to serve it.
#[derive(Debug)]
pub(crate) struct Listener {
    /// Metric label and log name: `otlp_grpc`, `otlp_http`, `http`.
    pub(crate) name: &'static str,
    pub(crate) tcp: TcpListener,
    pub(crate) protocol: Protocol,
    pub(crate) max_connections: usize,
    pub(crate) config: ServerConfig,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) metrics: ListenerMetrics,
}

struct Ctx {
    name: &'static str,
    app: Router,
    protocol: Protocol,
    config: ServerConfig,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: ListenerMetrics,
    /// One misconfigured exporter retrying would otherwise log a line per
    /// attempt.
    plaintext_log: Mutex<Every>,
}

/// Logs at most once per period, counting what it held back.
struct Every {
    period: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Every {
    fn new(period: Duration) -> Self {
        Every { period, last: None, held: 0 }
    }

    /// `Some(n)`: log now, `n` occurrences were held back since the last.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < self.period) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

impl Listener {
    /// Serves `app` until `shutdown` completes, then stops accepting (the
    /// port closes), lets every connection finish its requests (HTTP/2
    /// GOAWAY, HTTP/1 `Connection: close`) for at most `request_timeout`,
    /// and returns. Accept errors are logged and retried, so one bad moment
    /// (descriptors exhausted) does not stop the listener.
    pub(crate) async fn serve(self, app: Router, shutdown: impl Future<Output = ()>) {
        let label = ListenerLabel { listener: self.name.to_string() };
        self.metrics.max_connections.get_or_create(&label).set(self.max_connections as i64);
        // Every series from the start, at 0, so rates and alerts have a base.
        let _ = self.metrics.connections.get_or_create(&label);
        let _ = self.metrics.limit_reached.get_or_create(&label);
        for timeout in ["read_header", "tls_handshake", "idle", "request"] {
            let _ = self
                .metrics
                .timeouts
                .get_or_create(&TimeoutLabel { listener: self.name.to_string(), timeout });
        }
        let ctx = Arc::new(Ctx {
            name: self.name,
            app,
            protocol: self.protocol,
            builder: http_builder(&self.config, self.protocol),
            tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
            config: self.config,
            metrics: self.metrics,
            plaintext_log: Mutex::new(Every::new(Duration::from_secs(10))),
        });
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut cap_log = Every::new(Duration::from_secs(10));
        let mut accept_log = Every::new(Duration::from_secs(10));
        let tcp = self.tcp;
        tokio::pin!(shutdown);
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    ctx.metrics.limit_reached.get_or_create(&label).inc();
                    if let Some(held) = cap_log.due() {
                        tracing::warn!(
                            listener = ctx.name,
                            max_connections = self.max_connections,
                            times_since_last_log = held,
                            "listener at server.max_connections: new connections wait in the kernel's backlog until one closes"
                        );
                    }
                    tokio::select! {
                        p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        _ = &mut shutdown => break,
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                r = tcp.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        if !is_connection_error(&e) {
                            if let Some(held) = accept_log.due() {
                                tracing::warn!(listener = ctx.name, error = %e, errors_since_last_log = held,
                                    "accepting a connection failed; retrying");
                            }
                            // Descriptors exhausted: give closing
                            // connections a moment instead of spinning.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let ctx = ctx.clone();
            let drain = drain_rx.clone();
            let gauge = ctx.metrics.connections.get_or_create(&label).clone();
            tokio::spawn(async move {
                gauge.inc();
                handle(stream, peer, &ctx, drain).await;
                gauge.dec();
                drop(permit);
            });
        }
        drop(tcp);
        let _ = drain_tx.send(true);
        drop(drain_rx);
        // Each connection closes itself by request_timeout after the drain
        // starts; the margin covers the last writes.
        let _ = tokio::time::timeout(ctx.config.request_timeout + Duration::from_secs(2), drain_tx.closed())
            .await;
    }
}

fn http_builder(cfg: &ServerConfig, protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    if protocol == Protocol::Grpc {
        b = b.http2_only();
    }
    b.http1().timer(TokioTimer::new()).header_read_timeout(cfg.read_header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .keep_alive_interval(cfg.keepalive.time)
        .keep_alive_timeout(cfg.keepalive.timeout);
    b
}

/// Errors that concern one connection only (the peer gave up while in
/// the backlog); anything else is worth a log line.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

async fn handle(stream: TcpStream, peer: SocketAddr, ctx: &Ctx, drain: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(ctx.config.tcp_keepalive)
        .with_interval(ctx.config.tcp_keepalive);
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "setting TCP keepalive");
    }
    let Some(acceptor) = &ctx.tls else {
        // hyper's header timer starts with a request's first byte, so a
        // client that sends nothing would hold its slot until idle_timeout
        // (QA): the first byte must come within read_header_timeout too.
        let mut first = [0u8; 1];
        match tokio::time::timeout(ctx.config.read_header_timeout, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => return connection(stream, ctx, drain).await,
            Ok(_) => return,
            Err(_) => {
                ctx.metrics.timeout(ctx.name, "read_header");
                tracing::debug!(listener = ctx.name, %peer, "no request within server.read_header_timeout");
                return;
            }
        }
    };
    let mut stream = stream;
    let handshake = async {
        if refuse_plaintext(&mut stream, ctx.protocol).await? {
            if let Some(held) = ctx.plaintext_log.lock().expect("lock").due() {
                tracing::warn!(listener = ctx.name, %peer, times_since_last_log = held,
                    "plain-text client on a TLS port; answered that TLS is required and closed");
            }
            return Ok(None);
        }
        acceptor.accept(stream).await.map(Some)
    };
    match tokio::time::timeout(ctx.config.read_header_timeout, handshake).await {
        Ok(Ok(Some(tls))) => connection(tls, ctx, drain).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::debug!(listener = ctx.name, %peer, error = %e, "TLS handshake failed"),
        Err(_) => {
            ctx.metrics.timeout(ctx.name, "tls_handshake");
            tracing::debug!(listener = ctx.name, %peer, "TLS handshake not done within server.read_header_timeout");
        }
    }
}

/// On a TLS port, a first byte other than a TLS handshake record (0x16)
/// means a plain-text client. Like Go's `net/http`, answer in its own
/// protocol that TLS is needed, so the client's error says why, instead of
/// a bare reset: HTTP/1 gets a 400, HTTP/2 (gRPC) a GOAWAY whose debug
/// data says it. Returns whether the connection was refused.
async fn refuse_plaintext(stream: &mut TcpStream, protocol: Protocol) -> io::Result<bool> {
    const TLS_HANDSHAKE: u8 = 0x16;
    let mut head = [0u8; 3];
    let n = loop {
        let n = stream.peek(&mut head).await?;
        // "PRI" (the HTTP/2 preface) and "POST"/"PUT" share a first byte.
        if n == 0 || n == head.len() || head[0] != b'P' {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    if n == 0 {
        return Ok(true);
    }
    if head[0] == TLS_HANDSHAKE {
        return Ok(false);
    }
    const MSG: &str =
        "this port requires TLS: the client sent plain text; use https:// or enable TLS in the client";
    let answer: Vec<u8> = if head[..n] == *b"PRI" || protocol == Protocol::Grpc {
        // An empty SETTINGS frame (the server preface), then GOAWAY with
        // last-stream-id 0, PROTOCOL_ERROR and the message (RFC 9113 §6.8).
        let mut f = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
        let len = 8 + MSG.len();
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x1]);
        f.extend_from_slice(MSG.as_bytes());
        f
    } else {
        format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{MSG}\n",
            MSG.len() + 1
        )
        .into_bytes()
    };
    // Read what the client sent first: closing with unread bytes would
    // send a reset that can discard the answer before the client reads it.
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(true)
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    state: Mutex<(usize, Instant)>,
    changed: Notify,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.state.lock().expect("lock").0 += 1;
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    fn in_flight(&self) -> usize {
        self.state.lock().expect("lock").0
    }

    /// Completes once the connection has had no request in flight for
    /// `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (n, since) = *self.state.lock().expect("lock");
            if n > 0 {
                changed.await;
                continue;
            }
            let deadline = since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

/// One request in flight; dropped when its response body is done.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.state.lock().expect("lock");
            s.0 -= 1;
            if s.0 == 0 {
                s.1 = Instant::now();
            }
        }
        self.0.changed.notify_waiters();
    }
}

/// A response body that holds its request's [`InFlight`] until sent.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request cut by `server.request_timeout`: retryable in
/// both protocols (OTLP: HTTP 503, gRPC DEADLINE_EXCEEDED).
fn timeout_response(protocol: Protocol, after: Duration) -> axum::response::Response {
    let msg = format!(
        "the request was not answered within server.request_timeout ({}); retry later",
        humantime::format_duration(after)
    );
    match protocol {
        Protocol::Grpc => tonic::Status::deadline_exceeded(msg).into_http(),
        Protocol::Http => (StatusCode::SERVICE_UNAVAILABLE, msg).into_response(),
    }
}

/// How long a connection with nothing in flight may take to go once it is
/// being closed (idle, or the server draining).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves one connection until the client closes it, it has been idle for
/// `idle_timeout`, or the listener drains; after a graceful close starts,
/// it gets `request_timeout` (nothing in flight: [`IDLE_CLOSE_GRACE`]) to
/// finish before it is dropped.
async fn connection<I>(io: I, ctx: &Ctx, mut drain: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { state: Mutex::new((0, Instant::now())), changed: Notify::new() });
    let svc = {
        let activity = activity.clone();
        let app = ctx.app.clone();
        let protocol = ctx.protocol;
        let limit = ctx.config.request_timeout;
        let metrics = ctx.metrics.clone();
        let name = ctx.name;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin();
            let call = app.clone().oneshot(req);
            let metrics = metrics.clone();
            async move {
                let resp = match tokio::time::timeout(limit, call).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        metrics.timeout(name, "request");
                        timeout_response(protocol, limit)
                    }
                };
                Ok::<_, Infallible>(resp.map(|b| Tracked { inner: b, _in_flight: in_flight }))
            }
        })
    };
    let conn = ctx.builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    let header_timeout = e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_timeout());
                    if header_timeout {
                        ctx.metrics.timeout(ctx.name, "read_header");
                    }
                    tracing::debug!(listener = ctx.name, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.idle_for(ctx.config.idle_timeout), if closing.is_none() => {
                ctx.metrics.timeout(ctx.name, "idle");
                conn.as_mut().graceful_shutdown();
                // Nothing is in flight: the grace only lets the GOAWAY out.
                // An HTTP/2 client that never sent its preface would hold
                // a graceful close open for ever.
                closing = Some(Instant::now() + IDLE_CLOSE_GRACE);
            }
            _ = drain.wait_for(|d| *d), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                let grace = if activity.in_flight() == 0 { IDLE_CLOSE_GRACE } else { ctx.config.request_timeout };
                closing = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => {
                tracing::debug!(listener = ctx.name, "connection did not close in time; dropped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_defaults_and_checks() {
        let c: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(c.read_header_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive.timeout, Duration::from_secs(20));
        c.check(Duration::from_secs(30)).unwrap();
        let c: ServerConfig =
            toml::from_str("idle_timeout = \"5s\"\n[keepalive]\ntime = \"10s\"\ntimeout = \"1s\"").unwrap();
        assert_eq!((c.idle_timeout, c.keepalive.time), (Duration::from_secs(5), Duration::from_secs(10)));
        for (text, hint) in [
            ("max_connections = 0", "at least 1"),
            ("idle_timeout = \"0s\"", "server.idle_timeout must be more than 0"),
            ("max_concurrent_streams = 0", "at least 1"),
            ("request_timeout = \"30s\"", "longer than query.timeout (30s)"),
        ] {
            let c: ServerConfig = toml::from_str(text).unwrap();
            let err = c.check(Duration::from_secs(30)).unwrap_err().to_string();
            assert!(err.contains(hint), "{text}: {err}");
        }
        assert!(toml::from_str::<ServerConfig>("read_timeout = \"1s\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn test_default_cap_leaves_half_of_the_descriptors() {
        assert_eq!(default_max_connections(1024, 3), 170);
        assert_eq!(default_max_connections(256, 3), 42);
        assert_eq!(default_max_connections(4, 3), 1);
    }

    /// A handler slower than `request_timeout` is answered with a
    /// retryable status in the listener's protocol, and counted.
    #[tokio::test]
    async fn test_request_timeout_answers_in_the_listeners_protocol() {
        let metrics = ListenerMetrics::default();
        let slow = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let mut addrs = Vec::new();
        for (name, protocol) in [("http", Protocol::Http), ("otlp_grpc", Protocol::Grpc)] {
            let tcp = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
            addrs.push(tcp.local_addr().unwrap());
            let config = ServerConfig { request_timeout: Duration::from_millis(200), ..Default::default() };
            let l = Listener {
                name,
                tcp,
                protocol,
                max_connections: 8,
                config,
                tls: None,
                metrics: metrics.clone(),
            };
            tokio::spawn(l.serve(slow.clone(), std::future::pending()));
        }
        let r = reqwest::get(format!("http://{}/slow", addrs[0])).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("server.request_timeout (200ms)"));

        let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        let r = h2.get(format!("http://{}/slow", addrs[1])).send().await.unwrap();
        assert_eq!(r.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
        let label = TimeoutLabel { listener: "http".into(), timeout: "request" };
        assert_eq!(metrics.timeouts.get_or_create(&label).get(), 1);
    }
}
