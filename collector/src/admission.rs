//! Admission and counting in front of both receivers: one layer per
//! protocol, around every route, that sees each request before its body is
//! read and each answer after.
//!
//! Before the body: refused when storage is not ready, when resident
//! memory is over the soft limit, when the head is over its limit, when
//! `Content-Length` is over `max_request_bytes`, and when the in-flight
//! budget has no room for `Content-Length` bytes. While the body streams
//! in (chunked, or gRPC, where no length is declared): refused as soon as
//! what arrived no longer fits the budget, and cut when it is not all
//! there within `body_read_timeout`. The reservation is held until the
//! request is answered, so it covers the decoded request too.
//!
//! After the answer: every request is counted as received, and every error
//! answer as refused with its reason, including those the HTTP router and
//! tonic give themselves (unknown paths and methods, undecodable or
//! oversized gRPC messages), which the handlers never see.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::error::{find_ingest_error, HttpError, Refused, METHOD_NOT_ALLOWED, OTHER};
use crate::grpc::tonic_refusal;
use crate::memory::Reservation;
use crate::metrics::{signal_of, OTHER_SIGNAL};
use skein_storage::tenant::TenantId;

use crate::{Ingest, IngestError, Protocol};

impl Ingest {
    /// Admission from the headers alone: the checks above that need no
    /// body, and the reservation of its declared length.
    fn admit_headers(
        &self,
        headers: &HeaderMap,
        tenant: Option<&TenantId>,
    ) -> Result<Reservation, IngestError> {
        // The tenant's storage if it is open; a new tenant's is opened by
        // the export itself (and starts empty, so ready and not full).
        let storage = self.tenants.get_open(tenant.unwrap_or(&TenantId::single()));
        if storage.as_ref().is_some_and(|s| !s.is_ready()) {
            return Err(IngestError::NotReady);
        }
        self.limiter.check()?;
        // Storage refuses at append time past this too; checking here
        // spares reading a body that would be refused.
        if let Some(s) = storage {
            let h = &s.config().head;
            if s.head().memory_bytes() as f64 > h.max_bytes as f64 * h.overload_factor {
                return Err(IngestError::Overloaded);
            }
        }
        let declared = content_length(headers);
        let limit = self.cfg.max_request_bytes;
        if let Some(size) = declared.filter(|&n| n > limit as u64) {
            return Err(IngestError::TooLarge { size: size as usize, limit });
        }
        self.limiter.reserve(declared.unwrap_or(0))
    }

    /// Admits `req` (a request to an ingest endpoint) and runs it, or
    /// answers the refusal with `refuse`.
    pub(crate) async fn run_admitted(
        &self,
        req: Request,
        next: Next,
        refuse: impl FnOnce(IngestError, &HeaderMap) -> Response,
    ) -> Response {
        let (mut parts, body) = req.into_parts();
        // Only HTTP/1 needs the rest of an unread body drained so that the
        // client reads the answer; HTTP/2 resets just the stream.
        let drain = (parts.version < Version::HTTP_2).then_some(self.cfg.max_request_bytes as u64);
        let timeout = self.cfg.body_read_timeout;
        match self.admit_headers(&parts.headers, parts.extensions.get::<TenantId>()) {
            Err(err) => {
                drop(AdmittedBody::new(body, None, timeout, drain));
                refuse(err, &parts.headers)
            }
            Ok(res) => {
                let res = Arc::new(res);
                parts.extensions.insert(res.clone());
                let body = Body::new(AdmittedBody::new(body, Some(res.clone()), timeout, drain));
                let resp = next.run(Request::from_parts(parts, body)).await;
                drop(res);
                resp
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The OTLP/HTTP layer (see the module comment).
pub(crate) async fn http(State(ing): State<Ingest>, req: Request, next: Next) -> Response {
    let signal = signal_of(req.uri().path());
    ing.metrics.received(signal, Protocol::Http);
    let es = crate::es_bulk::is_es_path(req.uri().path());
    let resp = if signal == OTHER_SIGNAL {
        next.run(req).await
    } else {
        // Loki push refusals are JSON whatever the body's type (the
        // handler's own errors are too; see crate::loki).
        let loki = req.uri().path().starts_with("/loki/");
        ing.run_admitted(req, next, |err, headers| {
            if es {
                return crate::es_bulk::refusal(&err);
            }
            HttpError { err, json: loki || crate::http_api::is_json(headers) }.into_response()
        })
        .await
    };
    if let Some(reason) = refusal_reason(&resp) {
        ing.metrics.refused(signal, Protocol::Http, reason);
    }
    resp
}

/// Why an HTTP answer is a refusal (its [`Refused`] reason, or one from its
/// status), or `None` for a success.
pub(crate) fn refusal_reason(resp: &Response) -> Option<&'static str> {
    resp.extensions().get::<Refused>().map(|r| r.0).or_else(|| {
        let s = resp.status();
        (s.is_client_error() || s.is_server_error()).then_some(match s {
            StatusCode::NOT_FOUND => "unknown_path",
            StatusCode::METHOD_NOT_ALLOWED => METHOD_NOT_ALLOWED,
            _ => OTHER,
        })
    })
}

/// The OTLP/gRPC layer (see the module comment). Refusals tonic gives
/// itself are answered again from the one table (see
/// [`crate::normalize_grpc_status`]), with a `RetryInfo` when retryable.
pub(crate) async fn grpc(State(ing): State<Ingest>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let signal = signal_of(&path);
    ing.metrics.received(signal, Protocol::Grpc);
    let resp = if signal == OTHER_SIGNAL {
        next.run(req).await
    } else {
        ing.run_admitted(req, next, |err, _| tonic::Status::from(err).into_http()).await
    };
    let (resp, reason) = grpc_outcome(resp, &path);
    if let Some(reason) = reason {
        ing.metrics.refused(signal, Protocol::Grpc, reason);
    }
    resp
}

/// Whether a gRPC answer is a refusal, and why. A refusal comes before any
/// message, so its `grpc-status` is in the headers (a trailers-only
/// answer); an answer without it there is a success.
fn grpc_outcome(resp: Response, path: &str) -> (Response, Option<&'static str>) {
    let h = resp.headers();
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0");
    if code == "0" {
        return (resp, None);
    }
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(crate::grpc::grpc_message)
        .unwrap_or_default();
    let err = resp
        .extensions()
        .get::<tonic::Status>()
        .and_then(|st| find_ingest_error(st))
        .or_else(|| tonic_refusal(code, msg.clone()))
        .or_else(|| {
            (code == (tonic::Code::Unimplemented as i32).to_string()).then(|| {
                if msg.contains("compressed with") {
                    IngestError::UnsupportedEncoding(msg)
                } else {
                    IngestError::UnknownPath(format!(
                        "no gRPC method {path}; Skein takes TraceService/Export and LogsService/Export"
                    ))
                }
            })
        });
    match err {
        Some(e) => {
            let reason = e.reason();
            (tonic::Status::from(e).into_http(), Some(reason))
        }
        None => (resp, Some(OTHER)),
    }
}

/// A request body under admission: each frame that arrives grows the
/// request's reservation, and the whole body must arrive before the
/// deadline. Dropped unfinished on HTTP/1 (a refusal, or a body over the
/// limit), it drains the rest in the background, discarding it, up to the
/// same deadline and size, so that the client reads the answer instead of
/// a reset connection (what nginx calls a lingering close).
#[derive(Debug)]
pub(crate) struct AdmittedBody {
    inner: Option<Body>,
    reservation: Option<Arc<Reservation>>,
    read: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// Bytes to drain at most, on HTTP/1.
    drain: Option<u64>,
    finished: bool,
}

impl AdmittedBody {
    fn new(
        inner: Body,
        reservation: Option<Arc<Reservation>>,
        timeout: Duration,
        drain: Option<u64>,
    ) -> Self {
        AdmittedBody {
            inner: Some(inner),
            reservation,
            read: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            drain,
            finished: false,
        }
    }
}

impl http_body::Body for AdmittedBody {
    type Data = Bytes;
    type Error = IngestError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, IngestError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.read += d.len() as u64;
                    if let Some(r) = &this.reservation {
                        if let Err(e) = r.grow_to(this.read) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finished = true;
                Poll::Ready(Some(Err(IngestError::Malformed(format!("cannot read body: {e}")))))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.finished = true;
                    return Poll::Ready(Some(Err(IngestError::BodyTimeout(this.timeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for AdmittedBody {
    fn drop(&mut self) {
        let (Some(max), Some(body)) = (self.drain, self.inner.take()) else { return };
        if self.finished || http_body::Body::is_end_stream(&body) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let deadline = self.deadline.deadline();
        let left = max.saturating_sub(self.read);
        rt.spawn(tokio::time::timeout_at(deadline, drain(body, left)));
    }
}

/// Reads and discards up to `left` bytes of `body`.
async fn drain(mut body: Body, mut left: u64) {
    use http_body_util::BodyExt as _;
    while let Some(Ok(frame)) = body.frame().await {
        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
        if n > left {
            return;
        }
        left -= n;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::{CollectorConfig, MemoryLimit};

    #[test]
    fn test_percent_decode() {
        assert_eq!(crate::grpc::grpc_message("a%20b%3A%zz%2"), "a b:%zz%2");
    }

    /// A body that sends `first` bytes, then nothing, ever.
    struct Stall(Option<Bytes>);

    impl http_body::Body for Stall {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.get_mut().0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }

    fn stall(first: usize) -> Body {
        Body::new(Stall(Some(Bytes::from(vec![0u8; first]))))
    }

    fn ingest(cfg: CollectorConfig) -> (tempfile::TempDir, Ingest) {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            skein_storage::Storage::open(dir.path(), skein_storage::testsuite::test_config()).unwrap();
        storage.replay().unwrap();
        (dir, Ingest::new(skein_storage::tenant::Tenants::from_storage(storage), cfg))
    }

    const TRACES_GRPC: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    fn http_req(body: Body, len: Option<usize>) -> http::Request<Body> {
        let mut r = http::Request::post("/v1/traces").header(header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(n) = len {
            r = r.header(header::CONTENT_LENGTH, n);
        }
        r.body(body).unwrap()
    }

    fn grpc_req(body: Body) -> http::Request<Body> {
        http::Request::post(TRACES_GRPC)
            .version(Version::HTTP_2)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    }

    /// Sends `req` to the OTLP/HTTP router, or the gRPC routes, and
    /// returns the answer within 10 s (a stalled body that were awaited
    /// would never answer).
    async fn send(ing: &Ingest, req: http::Request<Body>, grpc: bool) -> Response {
        let call = async {
            if grpc {
                crate::grpc_routes(ing.clone()).oneshot(req).await.unwrap().map(Body::new)
            } else {
                crate::router(ing.clone()).oneshot(req).await.unwrap()
            }
        };
        tokio::time::timeout(Duration::from_secs(10), call).await.expect("answered in time")
    }

    fn refused(ing: &Ingest, protocol: Protocol, reason: &'static str) -> u64 {
        ing.metrics
            .refused_requests
            .get_or_create(&vec![("signal", "spans"), ("protocol", protocol.label()), ("reason", reason)])
            .get()
    }

    /// Issue 10 item 2: over the soft memory limit, ingest is refused
    /// before the body is read (it never ends here), retryably: HTTP 503
    /// with Retry-After, gRPC UNAVAILABLE with a RetryInfo delay; each
    /// refusal is counted.
    #[tokio::test]
    async fn test_over_the_soft_limit_refuses_before_reading() {
        use tonic_types::StatusExt as _;
        let (_d, ing) = ingest(CollectorConfig::default());
        // Any process is over a soft limit of one byte.
        let tiny = MemoryLimit { hard: 2, soft: 1, check_interval: Duration::from_millis(1) };
        let ing = ing.with_memory_limit(tiny);

        let resp = send(&ing, http_req(stall(10), Some(1000)), false).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(refused(&ing, Protocol::Http, "memory_limit"), 1);

        let resp = send(&ing, grpc_req(stall(10)), true).await;
        let st = tonic::Status::from_header_map(resp.headers()).expect("trailers-only refusal");
        assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
        assert_eq!(st.get_details_retry_info().unwrap().retry_delay, Some(Duration::from_secs(1)));
        assert_eq!(refused(&ing, Protocol::Grpc, "memory_limit"), 1);
    }

    /// Issue 10 item 3: a body that stalls is cut after
    /// `body_read_timeout` with 408 / DEADLINE_EXCEEDED, counted, and its
    /// reservation given back.
    #[tokio::test]
    async fn test_a_stalled_body_is_cut_by_the_read_timeout() {
        let cfg =
            CollectorConfig { body_read_timeout: Duration::from_millis(300), ..CollectorConfig::default() };
        let (_d, ing) = ingest(cfg);
        let t0 = Instant::now();
        let resp = send(&ing, http_req(stall(1000), Some(5000)), false).await;
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("not received within"), "{body:?}");
        assert_eq!(refused(&ing, Protocol::Http, "body_timeout"), 1);

        let resp = send(&ing, grpc_req(stall(3)), true).await;
        let st = tonic::Status::from_header_map(resp.headers()).expect("trailers-only refusal");
        assert_eq!(st.code(), tonic::Code::DeadlineExceeded, "{st:?}");
        assert_eq!(refused(&ing, Protocol::Grpc, "body_timeout"), 1);
        assert_eq!(ing.metrics.inflight_bytes.get(), 0);
    }

    /// Issue 10 item 3: the in-flight budget is taken before the body is
    /// read: by `Content-Length` when given (a request that does not fit
    /// is refused at once, 429), and as a chunked body streams in (refused
    /// as soon as it passes what is left).
    #[tokio::test]
    async fn test_the_inflight_budget_is_reserved_before_reading() {
        let cfg = CollectorConfig {
            max_request_bytes: 1 << 20,
            max_inflight_bytes: Some(2 << 20),
            body_read_timeout: Duration::from_secs(5),
            ..CollectorConfig::default()
        };
        let (_d, ing) = ingest(cfg);
        // Two stalled requests that declare 1 MiB each fill the budget.
        let holders: Vec<_> = (0..2)
            .map(|_| {
                let ing = ing.clone();
                tokio::spawn(async move { send(&ing, http_req(stall(10), Some(1 << 20)), false).await })
            })
            .collect();
        let full = async {
            while ing.metrics.inflight_bytes.get() < 2 << 20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), full).await.expect("both admitted");
        let resp = send(&ing, http_req(stall(10), Some(1000)), false).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        // Over max_request_bytes by its declared length: 413 unread.
        let resp = send(&ing, http_req(stall(10), Some(2 << 20)), false).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        for h in holders {
            h.abort();
        }
        let empty = async {
            while ing.metrics.inflight_bytes.get() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), empty).await.expect("given back");

        // Chunked (no length): 2 x 768 KiB arrive; a third body of as
        // much no longer fits once it streams in.
        let big: Vec<_> = (0..2)
            .map(|_| {
                let ing = ing.clone();
                tokio::spawn(async move { send(&ing, http_req(stall(3 << 18), None), false).await })
            })
            .collect();
        let streamed = async {
            while ing.metrics.inflight_bytes.get() < 3 << 19 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), streamed).await.expect("streamed in");
        let resp = send(&ing, http_req(stall(3 << 18), None), false).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let resp = send(&ing, grpc_req(stall(3 << 18)), true).await;
        let st = tonic::Status::from_header_map(resp.headers()).expect("trailers-only refusal");
        assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
        big.iter().for_each(|h| h.abort());
        assert_eq!(refused(&ing, Protocol::Http, "overloaded"), 2);
        assert_eq!(refused(&ing, Protocol::Grpc, "overloaded"), 1);
        assert_eq!(refused(&ing, Protocol::Http, "too_large"), 1);
    }
}
