//! Storage's own encoding of a batch of spans or log records: the payload of
//! a WAL record (see [`crate::wal`]).
//!
//! The WAL holds the validated model, not the wire request it came from, so
//! the receiver's decoding and validation run once and replay decodes once
//! (issue 8). Layout, every integer a LEB128 varint unless said otherwise,
//! every string or byte run a varint length then the bytes:
//!
//! ```text
//! batch    := resources scopes records
//! resources:= n (service_name attrs)*n       each shared resource once
//! scopes   := n (name version)*n             each shared scope once
//! span     := trace_id[16] span_id[8] parent(0 | 1 span_id[8]) trace_state
//!             flags name kind:u8 start end status_code:u8 status_message
//!             attrs events links resource_idx scope_idx
//! log      := time observed severity(zigzag) severity_text body(value)
//!             attrs trace_id[16] span_id(0 | 1 span_id[8]) flags event_name
//!             resource_idx scope_idx
//! ```
//!
//! `attrs` and `body` use [`crate::codec`]'s value encoding (the one the
//! segment columns use); `events` and `links` are [`codec::encode_events`] /
//! [`codec::encode_links`] blobs behind a length, empty when there are none.
//! Records point at their resource and scope by index, so `Arc`-shared ones
//! are written once per batch and come back shared. Decoding checks every
//! length and index against the input and never panics on garbage.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{self, DecodeError, Reader};
use crate::model::{LogRecord, Resource, Scope, Span, SpanId, TraceId};

/// A batch that cannot be decoded (torn, garbled, or not a batch).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A value inside the batch is malformed or runs past the end.
    #[error("corrupt batch: {0}")]
    Value(#[from] DecodeError),
    /// The batch structure is inconsistent.
    #[error("corrupt batch: {0}")]
    Corrupt(&'static str),
}

type Result<T, E = BatchError> = std::result::Result<T, E>;

/// Encodes spans as one batch.
pub fn encode_spans(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 160 + 64);
    let (resources, scopes) = shared(&mut out, spans.iter().map(|s| (&s.resource, &s.scope)));
    codec::put_varint(&mut out, spans.len() as u64);
    for s in spans {
        out.extend_from_slice(&s.trace_id.0);
        out.extend_from_slice(&s.span_id.0);
        put_opt_span_id(&mut out, s.parent_span_id);
        put_str(&mut out, &s.trace_state);
        codec::put_varint(&mut out, u64::from(s.flags));
        put_str(&mut out, &s.name);
        out.push(s.kind);
        codec::put_varint(&mut out, s.start_time_unix_nano);
        codec::put_varint(&mut out, s.end_time_unix_nano);
        out.push(s.status_code);
        put_str(&mut out, &s.status_message);
        codec::encode_attrs_into(&mut out, &s.attributes);
        put_blob(&mut out, s.events.is_empty(), || codec::encode_events(&s.events));
        put_blob(&mut out, s.links.is_empty(), || codec::encode_links(&s.links));
        put_refs(&mut out, &resources, &scopes, &s.resource, &s.scope);
    }
    out
}

/// Encodes log records as one batch.
pub fn encode_logs(logs: &[LogRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(logs.len() * 128 + 64);
    let (resources, scopes) = shared(&mut out, logs.iter().map(|l| (&l.resource, &l.scope)));
    codec::put_varint(&mut out, logs.len() as u64);
    for l in logs {
        codec::put_varint(&mut out, l.time_unix_nano);
        codec::put_varint(&mut out, l.observed_time_unix_nano);
        codec::put_varint(&mut out, zigzag(l.severity_number));
        put_str(&mut out, &l.severity_text);
        codec::encode_value(&mut out, &l.body);
        codec::encode_attrs_into(&mut out, &l.attributes);
        out.extend_from_slice(&l.trace_id.0);
        put_opt_span_id(&mut out, l.span_id);
        codec::put_varint(&mut out, u64::from(l.flags));
        put_str(&mut out, &l.event_name);
        put_refs(&mut out, &resources, &scopes, &l.resource, &l.scope);
    }
    out
}

/// Decodes a batch written by [`encode_spans`].
pub fn decode_spans(b: &[u8]) -> Result<Vec<Span>> {
    let mut r = Reader::new(b);
    let (resources, scopes) = read_shared(&mut r, b.len())?;
    // A span takes at least 36 bytes, which bounds the allocation by the input.
    let n = count(&mut r, b.len() / 36)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let trace_id = TraceId::from_slice(r.take(16)?).ok_or(BatchError::Corrupt("trace_id"))?;
        let span_id = SpanId::from_slice(r.take(8)?).ok_or(BatchError::Corrupt("span_id"))?;
        let parent_span_id = read_opt_span_id(&mut r)?;
        let trace_state = read_str(&mut r)?;
        let flags = read_u32(&mut r)?;
        let name = read_str(&mut r)?;
        let kind = read_u8(&mut r)?;
        let start_time_unix_nano = r.varint()?;
        let end_time_unix_nano = r.varint()?;
        let status_code = read_u8(&mut r)?;
        let status_message = read_str(&mut r)?;
        let attributes = r.attrs()?;
        let events = codec::decode_events(read_bytes(&mut r)?)?;
        let links = codec::decode_links(read_bytes(&mut r)?)?;
        let (resource, scope) = read_refs(&mut r, &resources, &scopes)?;
        out.push(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            start_time_unix_nano,
            end_time_unix_nano,
            status_code,
            status_message,
            attributes,
            events,
            links,
            resource,
            scope,
        });
    }
    finish(&mut r)?;
    Ok(out)
}

/// Decodes a batch written by [`encode_logs`].
pub fn decode_logs(b: &[u8]) -> Result<Vec<LogRecord>> {
    let mut r = Reader::new(b);
    let (resources, scopes) = read_shared(&mut r, b.len())?;
    // A log record takes at least 27 bytes.
    let n = count(&mut r, b.len() / 27)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let time_unix_nano = r.varint()?;
        let observed_time_unix_nano = r.varint()?;
        let severity_number = unzigzag(r.varint()?)?;
        let severity_text = read_str(&mut r)?;
        let body = r.value()?;
        let attributes = r.attrs()?;
        let trace_id = TraceId::from_slice(r.take(16)?).ok_or(BatchError::Corrupt("trace_id"))?;
        let span_id = read_opt_span_id(&mut r)?;
        let flags = read_u32(&mut r)?;
        let event_name = read_str(&mut r)?;
        let (resource, scope) = read_refs(&mut r, &resources, &scopes)?;
        out.push(LogRecord {
            time_unix_nano,
            observed_time_unix_nano,
            severity_number,
            severity_text,
            body,
            attributes,
            trace_id,
            span_id,
            flags,
            event_name,
            resource,
            scope,
        });
    }
    finish(&mut r)?;
    Ok(out)
}

/// Index of each distinct `Arc` (by pointer) in first-seen order.
type Interned<T> = HashMap<*const T, u64>;

/// Writes every distinct resource and scope of `records` once; returns
/// their indexes.
fn shared<'a>(
    out: &mut Vec<u8>,
    records: impl Iterator<Item = (&'a Arc<Resource>, &'a Arc<Scope>)> + Clone,
) -> (Interned<Resource>, Interned<Scope>) {
    let mut res: Interned<Resource> = HashMap::new();
    let mut res_list = Vec::new();
    let mut sc: Interned<Scope> = HashMap::new();
    let mut sc_list = Vec::new();
    for (r, s) in records {
        res.entry(Arc::as_ptr(r)).or_insert_with(|| {
            res_list.push(r);
            res_list.len() as u64 - 1
        });
        sc.entry(Arc::as_ptr(s)).or_insert_with(|| {
            sc_list.push(s);
            sc_list.len() as u64 - 1
        });
    }
    codec::put_varint(out, res_list.len() as u64);
    for r in res_list {
        put_str(out, &r.service_name);
        codec::encode_attrs_into(out, &r.attributes);
    }
    codec::put_varint(out, sc_list.len() as u64);
    for s in sc_list {
        put_str(out, &s.name);
        put_str(out, &s.version);
    }
    (res, sc)
}

/// The resources and scopes a batch's records refer to by index.
type Shared = (Vec<Arc<Resource>>, Vec<Arc<Scope>>);

fn read_shared(r: &mut Reader<'_>, input: usize) -> Result<Shared> {
    let n = count(r, input)?;
    let mut resources = Vec::with_capacity(n);
    for _ in 0..n {
        let service_name = read_str(r)?;
        resources.push(Arc::new(Resource { service_name, attributes: r.attrs()? }));
    }
    let n = count(r, input)?;
    let mut scopes = Vec::with_capacity(n);
    for _ in 0..n {
        let name = read_str(r)?;
        scopes.push(Arc::new(Scope { name, version: read_str(r)? }));
    }
    Ok((resources, scopes))
}

fn put_refs(
    out: &mut Vec<u8>,
    resources: &Interned<Resource>,
    scopes: &Interned<Scope>,
    r: &Arc<Resource>,
    s: &Arc<Scope>,
) {
    codec::put_varint(out, resources[&Arc::as_ptr(r)]);
    codec::put_varint(out, scopes[&Arc::as_ptr(s)]);
}

fn read_refs(
    r: &mut Reader<'_>,
    resources: &[Arc<Resource>],
    scopes: &[Arc<Scope>],
) -> Result<(Arc<Resource>, Arc<Scope>)> {
    let res = usize::try_from(r.varint()?).ok().and_then(|i| resources.get(i));
    let res = res.ok_or(BatchError::Corrupt("resource index out of range"))?.clone();
    let sc = usize::try_from(r.varint()?).ok().and_then(|i| scopes.get(i));
    Ok((res, sc.ok_or(BatchError::Corrupt("scope index out of range"))?.clone()))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    codec::put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A codec blob behind its length; nothing but a zero length when `empty`
/// (the codec decodes an empty blob as an empty list).
fn put_blob(out: &mut Vec<u8>, empty: bool, blob: impl FnOnce() -> Vec<u8>) {
    if empty {
        out.push(0);
    } else {
        let b = blob();
        codec::put_varint(out, b.len() as u64);
        out.extend_from_slice(&b);
    }
}

fn put_opt_span_id(out: &mut Vec<u8>, id: Option<SpanId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.0);
        }
    }
}

fn read_opt_span_id(r: &mut Reader<'_>) -> Result<Option<SpanId>> {
    match read_u8(r)? {
        0 => Ok(None),
        1 => Ok(Some(SpanId::from_slice(r.take(8)?).ok_or(BatchError::Corrupt("span_id"))?)),
        _ => Err(BatchError::Corrupt("span_id tag")),
    }
}

fn read_bytes<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let n = usize::try_from(r.varint()?).map_err(|_| BatchError::Corrupt("length"))?;
    Ok(r.take(n)?)
}

fn read_str(r: &mut Reader<'_>) -> Result<String> {
    String::from_utf8(read_bytes(r)?.to_vec()).map_err(|_| BatchError::Corrupt("invalid utf-8"))
}

fn read_u8(r: &mut Reader<'_>) -> Result<u8> {
    Ok(r.take(1)?[0])
}

fn zigzag(i: i32) -> u64 {
    u64::from(((i << 1) ^ (i >> 31)) as u32)
}

fn unzigzag(z: u64) -> Result<i32> {
    let z = u32::try_from(z).map_err(|_| BatchError::Corrupt("severity"))?;
    Ok(((z >> 1) as i32) ^ -((z & 1) as i32))
}

fn read_u32(r: &mut Reader<'_>) -> Result<u32> {
    u32::try_from(r.varint()?).map_err(|_| BatchError::Corrupt("flags"))
}

/// A record count, refused when larger than `max` (what the input could
/// hold at all), so garbage never makes a huge allocation.
fn count(r: &mut Reader<'_>, max: usize) -> Result<usize> {
    usize::try_from(r.varint()?)
        .ok()
        .filter(|n| *n <= max)
        .ok_or(BatchError::Corrupt("count larger than input"))
}

/// A batch is exactly its records: trailing bytes mean a garbled length.
fn finish(r: &mut Reader<'_>) -> Result<()> {
    match r.take(1) {
        Err(_) => Ok(()),
        Ok(_) => Err(BatchError::Corrupt("trailing bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttrValue, Event, Link};
    use proptest::prelude::*;

    fn resource(n: &str) -> Arc<Resource> {
        Arc::new(Resource {
            service_name: n.into(),
            attributes: vec![
                ("service.name".into(), AttrValue::Str(n.into())),
                ("k8s.pod.uid".into(), AttrValue::Bytes(vec![0, 255, 7])),
            ],
        })
    }

    /// Every field set, to values that differ from their defaults.
    fn full_span(res: &Arc<Resource>, sc: &Arc<Scope>, i: u8) -> Span {
        Span {
            trace_id: TraceId([i; 16]),
            span_id: SpanId([i.wrapping_add(1); 8]),
            parent_span_id: i.is_multiple_of(2).then_some(SpanId([9; 8])),
            trace_state: "rojo=00f067aa0ba902b7".into(),
            flags: 0x301,
            name: format!("GET /item/{i}"),
            kind: 2,
            start_time_unix_nano: u64::MAX - 5,
            end_time_unix_nano: u64::MAX,
            status_code: 2,
            status_message: "déjà vu".into(),
            attributes: vec![
                ("int".into(), AttrValue::Int(i64::MIN)),
                ("double".into(), AttrValue::Double(-0.5)),
                ("bool".into(), AttrValue::Bool(true)),
                ("empty".into(), AttrValue::Empty),
                ("array".into(), AttrValue::Array(vec![AttrValue::Int(1), AttrValue::Str("x".into())])),
                ("kv".into(), AttrValue::KvList(vec![("a".into(), AttrValue::Bool(false))])),
            ],
            events: vec![Event {
                time_unix_nano: 7,
                name: "exception".into(),
                attributes: vec![("exception.type".into(), AttrValue::Str("E".into()))],
            }],
            links: vec![Link {
                trace_id: TraceId([3; 16]),
                span_id: SpanId([4; 8]),
                trace_state: "a=b".into(),
                attributes: vec![("l".into(), AttrValue::Int(1))],
            }],
            resource: res.clone(),
            scope: sc.clone(),
        }
    }

    fn full_log(res: &Arc<Resource>, sc: &Arc<Scope>, i: u8) -> LogRecord {
        LogRecord {
            time_unix_nano: u64::MAX,
            observed_time_unix_nano: 17,
            severity_number: -3 - i32::from(i),
            severity_text: "ERROR".into(),
            body: AttrValue::KvList(vec![("msg".into(), AttrValue::Str("disk full".into()))]),
            attributes: vec![("thread".into(), AttrValue::Int(12))],
            trace_id: if i == 0 { TraceId::ZERO } else { TraceId([i; 16]) },
            span_id: (i > 0).then_some(SpanId([i; 8])),
            flags: u32::MAX,
            event_name: "device.app.lifecycle".into(),
            resource: res.clone(),
            scope: sc.clone(),
        }
    }

    fn scopes() -> (Arc<Scope>, Arc<Scope>) {
        (
            Arc::new(Scope { name: "io.opentelemetry.jdbc".into(), version: "1.2".into() }),
            Arc::new(Scope::default()),
        )
    }

    #[test]
    fn spans_round_trip_every_field_and_keep_sharing() {
        let (a, b) = (resource("checkout"), resource("cart"));
        let (s1, s2) = scopes();
        let spans = vec![full_span(&a, &s1, 1), full_span(&b, &s2, 2), full_span(&a, &s2, 3)];
        let back = decode_spans(&encode_spans(&spans)).unwrap();
        assert_eq!(back, spans);
        assert!(Arc::ptr_eq(&back[0].resource, &back[2].resource), "one resource, shared again");
        assert!(Arc::ptr_eq(&back[1].scope, &back[2].scope));
        assert!(!Arc::ptr_eq(&back[0].resource, &back[1].resource));
        // Empty values and lists survive too.
        let mut bare = full_span(&a, &s2, 4);
        (bare.trace_state, bare.name, bare.status_message) = (String::new(), String::new(), String::new());
        (bare.attributes, bare.events, bare.links) = (vec![], vec![], vec![]);
        assert_eq!(decode_spans(&encode_spans(&[bare.clone()])).unwrap(), vec![bare]);
        assert_eq!(decode_spans(&encode_spans(&[])).unwrap(), vec![]);
    }

    #[test]
    fn logs_round_trip_every_field_and_keep_sharing() {
        let a = resource("checkout");
        let (s1, _) = scopes();
        let logs = vec![full_log(&a, &s1, 0), full_log(&a, &s1, 5)];
        let back = decode_logs(&encode_logs(&logs)).unwrap();
        assert_eq!(back, logs);
        assert!(Arc::ptr_eq(&back[0].resource, &back[1].resource));
        assert_eq!(decode_logs(&encode_logs(&[])).unwrap(), vec![]);
        let mut extreme = full_log(&a, &s1, 1);
        extreme.severity_number = i32::MIN;
        assert_eq!(decode_logs(&encode_logs(&[extreme.clone()])).unwrap(), vec![extreme]);
    }

    #[test]
    fn a_span_batch_is_not_a_log_batch() {
        let (s1, _) = scopes();
        let spans = encode_spans(&[full_span(&resource("x"), &s1, 1)]);
        assert!(decode_logs(&spans).is_err());
    }

    proptest! {
        /// Every strict prefix of a batch (a torn write) is an error, and
        /// garbling any byte gives an error or some batch, never a panic.
        #[test]
        fn torn_or_garbled_batches_are_errors(cut in 0.0..1.0f64, at in 0.0..1.0f64, byte in any::<u8>()) {
            let (a, b) = (resource("checkout"), resource("cart"));
            let (s1, s2) = scopes();
            let spans = encode_spans(&[full_span(&a, &s1, 1), full_span(&b, &s2, 2)]);
            let logs = encode_logs(&[full_log(&a, &s1, 0), full_log(&b, &s2, 3)]);
            let (ns, nl) = ((spans.len() as f64 * cut) as usize, (logs.len() as f64 * cut) as usize);
            prop_assert!(decode_spans(&spans[..ns]).is_err());
            prop_assert!(decode_logs(&logs[..nl]).is_err());
            for enc in [&spans, &logs] {
                let mut g = enc.clone();
                let i = (g.len() as f64 * at) as usize;
                g[i] ^= byte | 1;
                let _ = decode_spans(&g);
                let _ = decode_logs(&g);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_spans(&bytes);
            let _ = decode_logs(&bytes);
        }
    }
}
