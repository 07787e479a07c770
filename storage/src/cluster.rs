//! Several nodes over one bucket (issue 14): node IDs, the bucket layout
//! of split roles, the query node's catalog of every node's segments (a
//! listing, polled), and the in-memory records an ingest node hands to
//! query nodes (its head and in-flight flushes), merged into their reads.
//!
//! Layout under the storage URL's prefix (`s3://bucket/prefix`):
//!
//! ```text
//! prefix/segments/{ulid}/...                      role `all` (one node), as before
//! prefix/tenants/{tenant}/segments/{ulid}/...     role `all`, other tenants
//! prefix/nodes/{node_id}/segments/{ulid}/...      ingest node `node_id`
//! prefix/nodes/{node_id}/tenants/{tenant}/segments/{ulid}/...
//! ```
//!
//! Each ingest node writes and deletes only under its own
//! `nodes/{node_id}/` (its start-up reconciliation sees nothing else:
//! its storage is opened at that prefix), so no two writers touch one
//! object. A query node ([`StorageConfig::mirror`]) writes nothing: it
//! lists `segments/` and every `nodes/*/segments/` (with the tenant's
//! part) and reads the committed segments it finds there, as Tempo's
//! queriers poll the blocklist.
//!
//! What a query node misses between polls is bounded: a segment an
//! ingest node has uploaded is listed by that node's answer to the
//! fan-out ([`MemoryExport::segments`]); when the query node's catalog
//! lacks one of them it polls at once before answering, so a record is
//! never in neither place. Segments listed in the bucket under a node's
//! prefix but not in that node's answer (uploaded after it answered)
//! are left out of that query: their records are in the answer.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::Arc;

use crate::batch;
use crate::head::{Flushing, TraceEntry};
use crate::model::{LogRecord, Span, TraceId};
use crate::remote::Remote;
use crate::segment::{self, Segment, META_FILE};
use crate::{now_unix_nano, remove_segment_dir, Error, Result, Storage};

/// Longest node ID, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// Checks a node ID (`--node-id`): 1 to 64 ASCII letters, digits and
/// `. _ -`, and neither `.` nor `..`, so that it is one safe object-key
/// segment (`nodes/{node_id}/`) and a valid hostname label mostly is.
///
/// # Errors
/// A message naming the fault.
pub fn check_node_id(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() || s.len() > MAX_NODE_ID_BYTES {
        return Err(format!("node ID {s:?} must be 1 to {MAX_NODE_ID_BYTES} bytes long"));
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} is not a valid node ID"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
        return Err(format!("node ID {s:?} holds {c:?}; use ASCII letters, digits and . _ -"));
    }
    Ok(())
}

/// The storage URL an ingest node `node_id` writes under, given the
/// cluster's storage URL (`s3://bucket/prefix` → `s3://bucket/prefix/nodes/{node_id}`).
pub fn node_storage_url(url: &str, node_id: &str) -> String {
    format!("{}/nodes/{node_id}", url.trim_end_matches('/'))
}

/// The path parts, under the storage URL's prefix, of the segments of
/// node `node` (`None`: the `all` layout) for tenant `tenant` (`None`: the
/// default tenant), without the final `segments`.
pub fn segments_parts<'a>(node: Option<&'a str>, tenant: Option<&'a str>) -> Vec<&'a str> {
    let mut v = Vec::new();
    if let Some(n) = node {
        v.extend(["nodes", n]);
    }
    if let Some(t) = tenant {
        v.extend(["tenants", t]);
    }
    v
}

/// What an ingest node holds in memory for one tenant, as of one instant:
/// every record of its head and in-flight flushes, and the IDs of the
/// segments in its catalog at that instant (all uploaded). Together they
/// hold each of its records exactly once ([`crate::catalog::Catalog::walk`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryExport {
    /// The node's `--node-id`.
    pub node_id: String,
    /// Segment IDs in the node's catalog.
    pub segments: Vec<String>,
    /// Spans in memory.
    pub spans: Vec<Span>,
    /// Log records in memory.
    pub logs: Vec<LogRecord>,
}

const EXPORT_MAGIC: &[u8; 4] = b"SKM1";

impl MemoryExport {
    /// The binary form sent over the internal endpoint: `SKM1`, then the
    /// node ID, each segment ID (u32 LE count; each a u32 LE length and
    /// bytes), then a span batch and a log batch ([`crate::batch`], the WAL
    /// encoding) each behind its u32 LE length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = EXPORT_MAGIC.to_vec();
        let put = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        put(&mut out, self.node_id.as_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        for s in &self.segments {
            put(&mut out, s.as_bytes());
        }
        put(&mut out, &batch::encode_spans(&self.spans));
        put(&mut out, &batch::encode_logs(&self.logs));
        out
    }

    /// Reads [`MemoryExport::encode`]'s form; never panics on garbage.
    ///
    /// # Errors
    /// [`Error::Corrupt`] saying what did not decode.
    pub fn decode(b: &[u8]) -> Result<MemoryExport> {
        let bad = |what: &str| Error::Corrupt(format!("node memory export: {what}"));
        let rest = b.strip_prefix(EXPORT_MAGIC).ok_or_else(|| bad("not an export (magic)"))?;
        let mut cur = rest;
        let u32_ = |cur: &mut &[u8]| -> Result<usize> {
            let (h, t) = cur.split_first_chunk::<4>().ok_or_else(|| bad("truncated"))?;
            *cur = t;
            Ok(u32::from_le_bytes(*h) as usize)
        };
        let bytes = |cur: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            if cur.len() < n {
                return Err(bad("truncated"));
            }
            let (h, t) = cur.split_at(n);
            *cur = t;
            Ok(h.to_vec())
        };
        let n = u32_(&mut cur)?;
        let node_id = String::from_utf8(bytes(&mut cur, n)?).map_err(|_| bad("node ID"))?;
        let count = u32_(&mut cur)?;
        let mut segments = Vec::with_capacity(count.min(cur.len()));
        for _ in 0..count {
            let n = u32_(&mut cur)?;
            segments.push(String::from_utf8(bytes(&mut cur, n)?).map_err(|_| bad("segment ID"))?);
        }
        let n = u32_(&mut cur)?;
        let spans = batch::decode_spans(&bytes(&mut cur, n)?).map_err(|e| bad(&e.to_string()))?;
        let n = u32_(&mut cur)?;
        let logs = batch::decode_logs(&bytes(&mut cur, n)?).map_err(|e| bad(&e.to_string()))?;
        if !cur.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(MemoryExport { node_id, segments, spans, logs })
    }

    /// The records grouped by trace, in segment order, as an in-flight
    /// flush holds them (so every read visits them as it visits one).
    fn into_flushing(self) -> Flushing {
        let mut by: HashMap<TraceId, TraceEntry> = HashMap::new();
        for s in self.spans {
            by.entry(s.trace_id).or_default().add_span(s);
        }
        for l in self.logs {
            by.entry(l.trace_id).or_default().logs.push(l);
        }
        let mut traces: Vec<(TraceId, TraceEntry)> = by.into_iter().collect();
        segment::sort_for_segment(&mut traces);
        Flushing { traces }
    }
}

/// The query node's view of the bucket: which node prefix each segment of
/// its catalog was found under, and the last successful poll.
#[derive(Debug, Default)]
pub(crate) struct MirrorState {
    /// Segment ID → node ID (`None`: the `all` layout's `segments/`).
    owner: HashMap<String, Option<String>>,
    /// Unix ns of the last poll that listed every prefix.
    pub(crate) last_poll_unix_nano: Option<u64>,
    /// Segments a listed segment `replaces`: not loaded again while their
    /// objects are still listed.
    replaced: HashSet<String>,
}

/// What one poll of the bucket changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    /// Segments newly in the catalog.
    pub added: usize,
    /// Segments gone from the bucket (compacted, expired), now out of the catalog.
    pub removed: usize,
    /// Segments in the catalog after the poll.
    pub segments: usize,
}

impl Storage {
    /// Whether this storage is a query node's read-only view of the bucket
    /// ([`crate::StorageConfig::mirror`]).
    pub fn is_mirror(&self) -> bool {
        self.cfg.mirror
    }

    /// Unix ns of the last successful [`Storage::poll_catalog`] (`None`
    /// before the first, and for a storage that is not a mirror).
    pub fn last_poll_unix_nano(&self) -> Option<u64> {
        self.mirror.lock().last_poll_unix_nano
    }

    /// A query node's catalog poll: lists the `all` layout's segments and
    /// every node's (`nodes/*/`), for this storage's tenant, adds the
    /// committed segments not yet in the catalog (their indexes
    /// downloaded to the local cache, Parquet left in the bucket) and drops
    /// those no longer listed (the local cache only: nothing in the bucket
    /// is written or deleted). A segment another listed segment `replaces`
    /// (a compaction output and its inputs both listed) is left out.
    /// Blocking. The storage is ready once a poll has succeeded.
    ///
    /// # Errors
    /// [`Error::Config`] when this storage is not a mirror; object-store
    /// and I/O errors (the catalog is then unchanged).
    pub fn poll_catalog(&self) -> Result<PollStats> {
        let (true, Some(base)) = (self.cfg.mirror, self.remote.as_ref()) else {
            return Err(Error::Config("poll_catalog: not a query node's storage".into()));
        };
        let _g = self.poll_lock.lock();
        let tenant = self.cfg.mirror_tenant.as_deref();
        let mut sources: Vec<(Option<String>, Arc<Remote>)> =
            vec![(None, base.at(&segments_parts(None, tenant))?)];
        for node in base.list_dirs(&["nodes"])? {
            if check_node_id(&node).is_err() {
                continue;
            }
            let r = base.at(&segments_parts(Some(&node), tenant))?;
            sources.push((Some(node), r));
        }
        let mut listed: HashMap<String, (Option<String>, Arc<Remote>)> = HashMap::new();
        for (node, r) in sources {
            let l = r.list()?;
            for id in l.committed {
                if !l.quarantined.contains(&id) {
                    listed.insert(id, (node.clone(), r.clone()));
                }
            }
        }
        let current: HashSet<String> =
            self.catalog.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect();
        let segdir = self.segments_dir();
        let skip = self.mirror.lock().replaced.clone();
        let mut added = Vec::new();
        for (id, (_, r)) in listed.iter().filter(|(id, _)| !current.contains(*id) && !skip.contains(*id)) {
            let dir = segdir.join(id);
            if !dir.join(META_FILE).exists() {
                let tmp = segdir.join(format!("tmp-dl-{id}"));
                let _ = fs::remove_dir_all(&tmp);
                r.download(id, &tmp, |f| f != segment::SPANS_FILE && f != segment::LOGS_FILE)?;
                let _ = fs::remove_dir_all(&dir);
                fs::rename(&tmp, &dir)?;
            }
            match Segment::open(&dir, self.metrics.clone(), Some(r.clone())) {
                Ok(seg) => added.push(Arc::new(seg)),
                Err(e) => {
                    // Left out of this poll and tried again at the next:
                    // a query node quarantines nothing in the bucket.
                    tracing::error!(segment = %id, store = r.url(), error = %e, "cannot open a segment of the bucket; skipping it");
                    let _ = remove_segment_dir(&segdir, &dir);
                }
            }
        }
        let n_added = added.len();
        let gone = self.catalog.edit_segments(|segs| {
            let (mut gone, mut keep): (Vec<_>, Vec<_>) =
                segs.drain(..).partition(|s| !listed.contains_key(&s.meta.id));
            keep.extend(added);
            let replaced: HashSet<String> =
                keep.iter().flat_map(|s| s.meta.replaces.iter().cloned()).collect();
            let (inputs, mut keep): (Vec<_>, Vec<_>) =
                keep.into_iter().partition(|s| replaced.contains(&s.meta.id));
            gone.extend(inputs);
            self.mirror.lock().replaced = replaced;
            keep.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
            *segs = keep;
            self.gauges.segments.set(&self.metrics.segments, segs.len() as i64);
            gone
        });
        let stats = PollStats {
            added: n_added,
            removed: gone.len(),
            segments: self.catalog.snapshot().segments.len(),
        };
        self.bury(gone);
        let mut m = self.mirror.lock();
        m.owner = listed.into_iter().map(|(id, (node, _))| (id, node)).collect();
        m.last_poll_unix_nano = Some(now_unix_nano());
        drop(m);
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(stats)
    }

    /// Everything this node holds in memory, and the segments holding the
    /// rest ([`MemoryExport`]), as of one instant. Copies the records.
    pub fn export_memory(&self, node_id: &str) -> MemoryExport {
        let mut out = MemoryExport { node_id: node_id.to_string(), ..Default::default() };
        let segments = self.catalog.walk(None, |_, t| {
            out.spans.extend(t.spans.iter().cloned());
            out.logs.extend(t.logs.iter().cloned());
        });
        out.segments = segments.iter().map(|s| s.meta.id.clone()).collect();
        out
    }

    /// Makes the ingest nodes' memory part of every read of this query
    /// node's storage (replacing what the previous call installed), and
    /// `warnings` (nodes that did not answer) part of every answer's
    /// warnings. A segment an answering node lists that the catalog lacks
    /// is loaded first (a poll); a segment of its prefix the catalog holds
    /// but it does not list is hidden, its records being in the export.
    /// Blocking (it may poll).
    ///
    /// # Errors
    /// As [`Storage::poll_catalog`], when a poll is needed.
    pub fn install_node_memory(&self, exports: Vec<MemoryExport>, warnings: Vec<String>) -> Result<()> {
        let known: HashSet<String> =
            self.catalog.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect();
        if exports.iter().flat_map(|e| &e.segments).any(|id| !known.contains(id)) {
            self.poll_catalog()?;
        }
        let hidden: HashSet<String> = {
            let m = self.mirror.lock();
            let mut h = HashSet::new();
            for e in &exports {
                let listed: HashSet<&String> = e.segments.iter().collect();
                h.extend(
                    m.owner
                        .iter()
                        .filter(|(id, node)| {
                            node.as_deref() == Some(e.node_id.as_str()) && !listed.contains(id)
                        })
                        .map(|(id, _)| id.clone()),
                );
            }
            h
        };
        let flushing = exports.into_iter().map(|e| Arc::new(e.into_flushing())).collect();
        self.catalog.set_remote(flushing, hidden);
        *self.node_warnings.write() = warnings;
        Ok(())
    }

    /// Warnings of the last [`Storage::install_node_memory`] (ingest nodes
    /// that did not answer): every answer may miss their data.
    pub fn node_warnings(&self) -> Vec<String> {
        self.node_warnings.read().clone()
    }
}
