//! `summaries.bin`: one trace summary ([`crate::summary::TraceSummary`])
//! per trace-ID index entry, kept at flush time so a search answers from
//! it instead of reading each result trace's spans from Parquet.
//!
//! ```text
//! "SKSM" | entries: u32 LE | zstd( strings | base | entry* )
//! strings = varint n, then n × (varint len, UTF-8 bytes)   service and span names
//! base    = varint                                         least trace start, Unix ns
//! entry   = varint services (0: the trace has no span here, nothing follows)
//!           | root service: string # | root name: string #
//!           | start - base | duration ns
//!           | services × (name: string #, spans, errors)   sorted by name
//! ```
//!
//! Entries are in trace-ID index order; the trace's span and error counts
//! are the sums over its services.

use std::collections::HashMap;

use crate::codec;
use crate::model::{Span, TraceId};
use crate::summary::{summarize, ServiceCount, TraceSummary};
use crate::{Error, Result};

/// The file's name in a segment directory.
pub(crate) const SUMMARIES_FILE: &str = "summaries.bin";
const MAGIC: &[u8; 4] = b"SKSM";
/// zstd level of the file: it is small and written once per segment.
const ZSTD_LEVEL: i32 = 9;

/// Collects the summaries of a segment's traces while it is written.
#[derive(Debug, Default)]
pub(crate) struct SummaryBuilder {
    strings: Vec<String>,
    string_ids: HashMap<String, u64>,
    /// Per entry: `None` for a trace without spans.
    entries: Vec<Option<Compact>>,
}

#[derive(Debug)]
struct Compact {
    root_service: u64,
    root_name: u64,
    start: u64,
    duration: u64,
    services: Vec<(u64, u64, u64)>,
}

impl SummaryBuilder {
    fn string(&mut self, s: &str) -> u64 {
        if let Some(i) = self.string_ids.get(s) {
            return *i;
        }
        let i = self.strings.len() as u64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    /// Adds the next trace-ID index entry's trace, from its spans in this
    /// segment (each span ID once).
    pub(crate) fn add(&mut self, spans: &[Span]) {
        if spans.is_empty() {
            self.entries.push(None);
            return;
        }
        let s = summarize(TraceId::default(), spans);
        let c = Compact {
            root_service: self.string(&s.root_service),
            root_name: self.string(&s.root_name),
            start: s.start_time_unix_nano,
            duration: s.duration_ns,
            services: s
                .services
                .iter()
                .map(|c| (self.string(&c.name), c.span_count, c.error_count))
                .collect(),
        };
        self.entries.push(Some(c));
    }

    /// The file's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut p = Vec::new();
        codec::put_varint(&mut p, self.strings.len() as u64);
        for s in &self.strings {
            codec::put_varint(&mut p, s.len() as u64);
            p.extend_from_slice(s.as_bytes());
        }
        let base = self.entries.iter().flatten().map(|c| c.start).min().unwrap_or(0);
        codec::put_varint(&mut p, base);
        for e in &self.entries {
            let Some(c) = e else {
                codec::put_varint(&mut p, 0);
                continue;
            };
            codec::put_varint(&mut p, c.services.len() as u64);
            for v in [c.root_service, c.root_name, c.start - base, c.duration] {
                codec::put_varint(&mut p, v);
            }
            for &(name, spans, errors) in &c.services {
                for v in [name, spans, errors] {
                    codec::put_varint(&mut p, v);
                }
            }
        }
        let mut out = Vec::with_capacity(p.len() / 2 + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&zstd::bulk::compress(&p, ZSTD_LEVEL)?);
        Ok(out)
    }
}

/// A decoded `summaries.bin`: the payload kept as bytes with each entry's
/// offset (a few bytes per trace in memory), entries decoded on demand.
#[derive(Debug)]
pub(crate) struct Summaries {
    strings: Vec<String>,
    base: u64,
    payload: Vec<u8>,
    offsets: Vec<u32>,
}

/// A position in the payload; every read checks the bytes that remain.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// An unsigned LEB128 varint.
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(|| bad("past end"))?;
        let v = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Ok(v)
    }
}

fn bad(why: &str) -> Error {
    Error::Corrupt(format!("{SUMMARIES_FILE}: {why}"))
}

impl Summaries {
    /// Decodes the file's bytes; `entries` is the trace-ID index's length,
    /// which the file must match. `what` names the file in errors.
    pub(crate) fn decode(b: &[u8], entries: usize, what: &str) -> Result<Summaries> {
        if b.len() < 8 || &b[..4] != MAGIC {
            return Err(Error::Corrupt(format!("{what}: bad header")));
        }
        let n = u32::from_le_bytes(b[4..8].try_into().expect("4")) as usize;
        if n != entries {
            return Err(Error::Corrupt(format!("{what}: {n} entries for {entries} traces")));
        }
        let payload =
            zstd::stream::decode_all(&b[8..]).map_err(|e| Error::Corrupt(format!("{what}: {e}")))?;
        let mut r = Cursor { buf: &payload, pos: 0 };
        let ns = r.varint()?;
        let mut strings = Vec::new();
        for _ in 0..ns {
            let len = r.varint()? as usize;
            let s = r.take(len)?;
            strings.push(String::from_utf8(s).map_err(|_| Error::Corrupt(format!("{what}: utf-8")))?);
        }
        let base = r.varint()?;
        let mut offsets = Vec::with_capacity(n);
        for _ in 0..n {
            offsets.push(u32::try_from(r.pos).map_err(|_| Error::Corrupt(format!("{what}: too large")))?);
            let services = r.varint()?;
            if services == 0 {
                continue;
            }
            for _ in 0..services.saturating_mul(3).saturating_add(4) {
                r.varint()?;
            }
        }
        if r.pos != payload.len() {
            return Err(Error::Corrupt(format!("{what}: trailing bytes")));
        }
        // String numbers are checked when an entry is read.
        Ok(Summaries { strings, base, payload, offsets })
    }

    fn name(&self, i: u64) -> Result<String> {
        self.strings
            .get(i as usize)
            .cloned()
            .ok_or_else(|| Error::Corrupt(format!("{SUMMARIES_FILE}: string {i} out of range")))
    }

    /// The summary of entry `i` (of the trace-ID index) for trace `id`:
    /// `None` when the trace has no span in the segment.
    pub(crate) fn get(&self, i: usize, id: TraceId) -> Result<Option<TraceSummary>> {
        let Some(&off) = self.offsets.get(i) else { return Ok(None) };
        let mut r = Cursor { buf: &self.payload, pos: off as usize };
        let mut next = || r.varint();
        let n = next()?;
        if n == 0 {
            return Ok(None);
        }
        let (root_service, root_name, start, duration) = (next()?, next()?, next()?, next()?);
        let mut services = Vec::new();
        for _ in 0..n {
            let (name, span_count, error_count) = (next()?, next()?, next()?);
            services.push((name, span_count, error_count));
        }
        let services = services
            .into_iter()
            .map(|(name, span_count, error_count)| {
                Ok(ServiceCount { name: self.name(name)?, span_count, error_count })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(TraceSummary {
            trace_id: id,
            root_service: self.name(root_service)?,
            root_name: self.name(root_name)?,
            start_time_unix_nano: self.base.saturating_add(start),
            duration_ns: duration,
            span_count: services.iter().map(|s| s.span_count).sum(),
            error_count: services.iter().map(|s| s.error_count).sum(),
            services,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn summaries_round_trip_and_match_summarize() {
        let web = resource("web", vec![]);
        let cart = resource("cart", vec![]);
        let mut child = span(1, 2, &cart, "get", 2_000, 5_000, 2, vec![]);
        child.parent_span_id = Some(crate::model::SpanId([1; 8]));
        let t1 = vec![span(1, 1, &web, "GET /", 1_000, 50_000, 0, vec![]), child];
        let t3 = vec![span(3, 9, &cart, "put", 40_000, 1, 2, vec![])];
        let mut b = SummaryBuilder::default();
        b.add(&t1);
        b.add(&[]);
        b.add(&t3);
        let bytes = b.encode().unwrap();
        let s = Summaries::decode(&bytes, 3, "t").unwrap();
        let id = |b| TraceId([b; 16]);
        assert_eq!(s.get(0, id(1)).unwrap().unwrap(), summarize(id(1), &t1));
        assert_eq!(s.get(1, id(2)).unwrap(), None);
        assert_eq!(s.get(2, id(3)).unwrap().unwrap(), summarize(id(3), &t3));
        assert_eq!(s.get(3, id(4)).unwrap(), None);
        assert!(Summaries::decode(&bytes, 2, "t").is_err());
        assert!(Summaries::decode(&bytes[..bytes.len() - 1], 3, "t").is_err());
        assert!(Summaries::decode(b"SKSX\0\0\0\0", 0, "t").is_err());
        let empty = SummaryBuilder::default().encode().unwrap();
        assert!(Summaries::decode(&empty, 0, "t").is_ok());
    }
}
