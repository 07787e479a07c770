//! Sending the workload: one task per connection takes the next request
//! file, sends its bytes over OTLP/gRPC or OTLP/HTTP, and retries a
//! retryable refusal with backoff as OTLP exporters do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::workload::Item;

/// Attempts per request before a retryable refusal counts as a failure.
const MAX_ATTEMPTS: u32 = 100;

/// How a request went: accepted, refused as retryable, or failed.
enum Outcome {
    Ok,
    Retry,
    Fail,
}

/// Where and how fast every connection sends.
#[derive(Clone)]
pub(crate) struct Plan {
    /// OTLP/gRPC endpoint URL, used when `http` is `None`.
    pub(crate) grpc: String,
    /// OTLP/HTTP `host:port`.
    pub(crate) http: Option<String>,
    /// Target spans per second over all connections; 0 = flat out.
    pub(crate) rate: u64,
    /// Connections sharing `rate`.
    pub(crate) connections: u64,
    /// Stop at this instant; `None` = after one pass over the files.
    pub(crate) deadline: Option<Instant>,
    /// Stop once this many spans were accepted.
    pub(crate) span_cap: u64,
}

/// What the connections share: the next file to send and the tallies.
#[derive(Default)]
pub(crate) struct Tally {
    next: AtomicUsize,
    pub(crate) spans_ok: AtomicU64,
    pub(crate) logs_ok: AtomicU64,
    /// Retryable refusals, each retried.
    pub(crate) refused: AtomicU64,
    /// Requests refused at least once.
    pub(crate) refused_requests: AtomicU64,
    /// The longest time, in µs, from a request's first refusal to the
    /// end of its last attempt: how long the server refused it in a row.
    pub(crate) longest_refused_us: AtomicU64,
    /// Requests given up on.
    pub(crate) failed: AtomicU64,
}

/// Sends bytes as they are; decodes nothing of the answer but its status.
#[derive(Debug, Default, Clone, Copy)]
struct RawCodec;
#[derive(Debug)]
struct RawEncoder;
#[derive(Debug)]
struct SkipDecoder;

impl Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: bytes::Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for SkipDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = SkipDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> SkipDecoder {
        SkipDecoder
    }
}

/// One connection's loop, until the plan's stop condition. Returns the
/// latency of each request in µs, retries included.
pub(crate) async fn connection(items: Arc<Vec<Item>>, tally: Arc<Tally>, plan: Plan) -> Result<Vec<u64>> {
    let mut lat = Vec::new();
    let mut g = match &plan.http {
        None => {
            let ch = tonic::transport::Endpoint::from_shared(plan.grpc.clone())?.connect().await?;
            Some(tonic::client::Grpc::new(ch))
        }
        Some(_) => None,
    };
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let mut sent_spans = 0u64;
    loop {
        let i = tally.next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i % items.len()) else { break };
        let passes_done = i >= items.len();
        if (plan.deadline.is_none() && passes_done)
            || plan.deadline.is_some_and(|d| Instant::now() >= d)
            || tally.spans_ok.load(Ordering::Relaxed) >= plan.span_cap
        {
            break;
        }
        if plan.rate > 0 && item.traces {
            // Pace this connection at its share of the rate.
            let due = t0
                + Duration::from_secs_f64(sent_spans as f64 / (plan.rate as f64 / plan.connections as f64));
            tokio::time::sleep_until(due.into()).await;
        }
        // As OTLP exporters do: a refusal the server marks as
        // retryable (gRPC UNAVAILABLE, HTTP 429/503) is sent again
        // after a backoff, so the rate is what the server sustains.
        let t = Instant::now();
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0;
        let mut first_refused: Option<Instant> = None;
        let ok = loop {
            attempts += 1;
            let outcome = match (&mut g, &plan.http) {
                (Some(g), _) => {
                    g.ready().await?;
                    let path = if item.traces {
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                    } else {
                        "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
                    };
                    let r = g
                        .unary(
                            tonic::Request::new(bytes::Bytes::from(item.body.clone())),
                            http::uri::PathAndQuery::from_static(path),
                            RawCodec,
                        )
                        .await;
                    match r {
                        Ok(_) => Outcome::Ok,
                        Err(e) if e.code() == tonic::Code::Unavailable => Outcome::Retry,
                        Err(_) => Outcome::Fail,
                    }
                }
                (None, Some(addr)) => {
                    let path = if item.traces { "v1/traces" } else { "v1/logs" };
                    let r = client
                        .post(format!("http://{addr}/{path}"))
                        .header("content-type", "application/x-protobuf")
                        .body(item.body.clone())
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => Outcome::Ok,
                        Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => Outcome::Retry,
                        _ => Outcome::Fail,
                    }
                }
                (None, None) => unreachable!("one transport is chosen"),
            };
            match outcome {
                Outcome::Ok => break true,
                Outcome::Retry if attempts < MAX_ATTEMPTS => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    if first_refused.is_none() {
                        first_refused = Some(Instant::now());
                        tally.refused_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Outcome::Retry | Outcome::Fail => break false,
            }
        };
        lat.push(t.elapsed().as_micros() as u64);
        if let Some(f) = first_refused {
            tally.longest_refused_us.fetch_max(f.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        if ok {
            if item.traces {
                sent_spans += item.records;
                tally.spans_ok.fetch_add(item.records, Ordering::Relaxed);
            } else {
                tally.logs_ok.fetch_add(item.records, Ordering::Relaxed);
            }
        } else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(lat)
}
