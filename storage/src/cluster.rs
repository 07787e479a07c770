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
use crate::cluster_compact::{visibility, Listed, Visibility};
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
    /// Every committed segment of the last poll, hidden ones included.
    pub(crate) listed: Vec<Listed>,
    /// Which of them are hidden, and every ID a committed output replaces
    /// ([`visibility`]).
    pub(crate) vis: Visibility,
    /// What each listed segment's `meta.json` says, fetched once.
    info: HashMap<String, Listed>,
    /// Segments an ingest node still lists that a poll after its answer
    /// did not find (the compactor deleted them, as compacted or expired,
    /// and the node's catalog has not caught up): known, so they cost no
    /// poll per query. Only those the last answers list are kept.
    absent: HashSet<String>,
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
        let mut listed: HashMap<String, (Option<String>, Arc<Remote>, u64)> = HashMap::new();
        for (node, r) in sources {
            let l = r.list()?;
            for id in l.committed {
                if !l.quarantined.contains(&id) {
                    let t = l.committed_unix_nano.get(&id).copied().unwrap_or(0);
                    listed.insert(id, (node.clone(), r.clone(), t));
                }
            }
        }
        let in_catalog: HashMap<String, Arc<Segment>> =
            self.catalog.edit_segments(|segs| segs.iter().map(|s| (s.meta.id.clone(), s.clone())).collect());
        // What hides what needs every listed segment's `replaces` and
        // epoch: from the catalog, the cache, or its `meta.json` alone (a
        // segment to be hidden is never downloaded further).
        let cached = std::mem::take(&mut self.mirror.lock().info);
        let mut info: HashMap<String, Listed> = HashMap::new();
        for (id, (node, r, committed)) in &listed {
            let meta = match (in_catalog.get(id), cached.get(id)) {
                (Some(seg), _) => {
                    Some((seg.meta.replaces.clone(), seg.meta.compaction_epoch, seg.meta.created_unix_nano))
                }
                (None, Some(l)) => Some((l.replaces.clone(), l.epoch, l.created_unix_nano)),
                (None, None) => match r
                    .get(id, META_FILE)
                    .and_then(|b| serde_json::from_slice::<segment::SegmentMeta>(&b).map_err(Error::from))
                {
                    Ok(m) => Some((m.replaces, m.compaction_epoch, m.created_unix_nano)),
                    Err(e) => {
                        tracing::error!(segment = %id, store = r.url(), error = %e, "cannot read a segment's meta.json in the bucket; skipping it");
                        None
                    }
                },
            };
            if let Some((replaces, epoch, created_unix_nano)) = meta {
                let l = Listed {
                    id: id.clone(),
                    node: node.clone(),
                    replaces,
                    epoch,
                    created_unix_nano,
                    committed_unix_nano: *committed,
                };
                info.insert(id.clone(), l);
            }
        }
        drop(in_catalog);
        let all: Vec<Listed> = info.values().cloned().collect();
        let vis = visibility(&all);
        let current = self.catalog_ids();
        let segdir = self.segments_dir();
        let mut added = Vec::new();
        let visible = |id: &String| info.contains_key(id) && !vis.hidden.contains_key(id);
        for (id, (_, r, _)) in listed.iter().filter(|(id, _)| !current.contains(*id) && visible(id)) {
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
            let (gone, mut keep): (Vec<_>, Vec<_>) = segs.drain(..).partition(|s| !visible(&s.meta.id));
            keep.extend(added);
            keep.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
            *segs = keep;
            self.gauges.segments.set(&self.metrics.segments, segs.len() as i64);
            gone
        });
        let stats = PollStats { added: n_added, removed: gone.len(), segments: self.catalog_ids().len() };
        self.bury(gone);
        let mut m = self.mirror.lock();
        m.owner = listed.into_iter().map(|(id, (node, _, _))| (id, node)).collect();
        m.listed = all;
        m.vis = vis;
        m.info = info;
        m.last_poll_unix_nano = Some(now_unix_nano());
        drop(m);
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(stats)
    }

    /// The IDs of every segment in the catalog, hidden ones included.
    fn catalog_ids(&self) -> HashSet<String> {
        self.catalog.edit_segments(|segs| segs.iter().map(|s| s.meta.id.clone()).collect())
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
        // A segment a committed output replaces (hidden, or already deleted
        // from the bucket by the compactor, while its ingest node still
        // lists it) is known: its records are in the output.
        let known = |s: &Storage| {
            let mut k = s.catalog_ids();
            let m = s.mirror.lock();
            k.extend(m.vis.replaced.iter().cloned());
            k.extend(m.vis.hidden.keys().cloned());
            k.extend(m.absent.iter().cloned());
            k
        };
        let answered: HashSet<&String> = exports.iter().flat_map(|e| &e.segments).collect();
        let unknown = |k: &HashSet<String>| answered.iter().filter(|id| !k.contains(**id)).count();
        if unknown(&known(self)) > 0 {
            self.poll_catalog()?;
            // Listed in an answer given before this poll, and not in the
            // bucket after it: deleted.
            let still: Vec<String> = {
                let k = known(self);
                answered.iter().filter(|id| !k.contains(**id)).map(|id| (*id).clone()).collect()
            };
            self.mirror.lock().absent.extend(still);
        }
        self.mirror.lock().absent.retain(|id| answered.contains(id));
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
        // One block for every node: a span a retrying sender delivered to
        // two nodes is one span, in counts and listings too, as two copies
        // in one node's head are.
        let mut all = MemoryExport::default();
        for e in exports {
            all.spans.extend(e.spans);
            all.logs.extend(e.logs);
        }
        let flushing = vec![Arc::new(all.into_flushing())];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{
        append_log_of, append_spans_of, log_of_trace, spans_of_trace, test_config, trace_id,
    };
    use crate::StorageConfig;

    #[test]
    fn test_node_ids_and_layout() {
        for ok in ["n1", "ingest-0", "a.b_c", &"z".repeat(64)] {
            check_node_id(ok).unwrap();
        }
        for (bad, why) in [
            ("", "1 to 64"),
            (&"z".repeat(65), "1 to 64"),
            (".", "not a valid"),
            ("..", "not a valid"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
        ] {
            let e = check_node_id(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(node_storage_url("s3://b/p/", "n1"), "s3://b/p/nodes/n1");
        assert_eq!(node_storage_url("s3://b", "n1"), "s3://b/nodes/n1");
        assert_eq!(segments_parts(Some("n1"), Some("t")), ["nodes", "n1", "tenants", "t"]);
        assert_eq!(segments_parts(None, Some("t")), ["tenants", "t"]);
        assert!(segments_parts(None, None).is_empty());
    }

    #[test]
    fn test_memory_export_round_trips_and_refuses_garbage() {
        let e = MemoryExport {
            node_id: "n1".into(),
            segments: vec!["01A".into(), "01B".into()],
            spans: spans_of_trace(1, 0, 3),
            logs: vec![log_of_trace(1, "hello")],
        };
        let b = e.encode();
        assert_eq!(MemoryExport::decode(&b).unwrap(), e);
        for cut in [0, 3, 4, 9, b.len() - 1] {
            assert!(MemoryExport::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(MemoryExport::decode(&extra).is_err());
        assert!(MemoryExport::decode(b"SKM1\xff\xff\xff\xff").is_err());
    }

    fn store_config(url: &str) -> StorageConfig {
        StorageConfig { storage_url: Some(url.to_string()), ..test_config() }
    }

    fn mirror_config(url: &str) -> StorageConfig {
        StorageConfig { mirror: true, ..store_config(url) }
    }

    /// A `file://` bucket, ingest nodes `n1` and `n2` on it (replayed) and
    /// a query node over it (not polled yet). The directories live as long
    /// as the first two values.
    #[allow(clippy::type_complexity)]
    fn two_nodes_and_a_query_node(
    ) -> (tempfile::TempDir, Vec<tempfile::TempDir>, Arc<Storage>, Arc<Storage>, Arc<Storage>) {
        let bucket = tempfile::tempdir().unwrap();
        let url = format!("file://{}", bucket.path().display());
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let node = |i: usize, id: &str| {
            let n = Storage::open(dirs[i].path(), store_config(&node_storage_url(&url, id))).unwrap();
            n.replay().unwrap();
            n
        };
        let (n1, n2) = (node(0, "n1"), node(1, "n2"));
        let q = Storage::open(dirs[2].path(), mirror_config(&url)).unwrap();
        (bucket, dirs, n1, n2, q)
    }

    /// Two ingest nodes each write under their own prefix; a query node
    /// lists both, reads a trace split across them whole (from their
    /// segments, from their memory, and from both at once, a span found
    /// twice counted once), never writes to the bucket, and drops a
    /// segment once it is gone from the bucket.
    #[tokio::test]
    async fn test_a_query_node_reads_every_node_prefix_and_their_memory() {
        let (bucket, _dirs, n1, n2, q) = two_nodes_and_a_query_node();
        q.replay().unwrap();
        assert!(!q.is_ready() && q.last_poll_unix_nano().is_none(), "not ready before the first poll");
        let t = trace_id(1);
        // Spans 0-1 on n1, 2-4 on n2; both flushed.
        append_spans_of(&n1, 1, 0, 2).await;
        append_spans_of(&n2, 1, 2, 3).await;
        n1.flush(true).unwrap();
        n2.flush(true).unwrap();
        assert!(
            bucket.path().join("nodes/n1/segments").is_dir()
                && bucket.path().join("nodes/n2/segments").is_dir()
        );
        let st = q.poll_catalog().unwrap();
        assert_eq!((st.added, st.segments), (2, 2));
        assert!(q.is_ready() && q.last_poll_unix_nano().is_some());
        assert_eq!(q.get_trace(&t).unwrap().unwrap().0.len(), 5);
        assert_eq!(q.poll_catalog().unwrap().added, 0, "nothing new");

        // More of the trace in both nodes' memory, a span of n1's segment
        // sent again to n2 (one span), and a log.
        append_spans_of(&n1, 1, 5, 1).await;
        append_spans_of(&n2, 1, 6, 1).await;
        n2.append_spans(spans_of_trace(1, 0, 1)).await.unwrap();
        append_log_of(&n2, 1, "from n2").await;
        let exports = vec![n1.export_memory("n1"), n2.export_memory("n2")];
        q.install_node_memory(exports, Vec::new()).unwrap();
        let (spans, logs) = q.get_trace(&t).unwrap().unwrap();
        assert_eq!((spans.len(), logs.len()), (7, 1));
        assert!(q.damage_in_range(None, None).is_empty());

        // n2 flushes; its next answer lists a segment the query node has
        // not polled yet: it is loaded before the answer, nothing missed.
        n2.flush(true).unwrap();
        let exports = vec![n1.export_memory("n1"), n2.export_memory("n2")];
        q.install_node_memory(exports, Vec::new()).unwrap();
        assert_eq!(q.snapshot().segments.len(), 3);
        let (spans, logs) = q.get_trace(&t).unwrap().unwrap();
        assert_eq!((spans.len(), logs.len()), (7, 1));

        // n1 flushes after it answered: the new segment is hidden until n1
        // answers again (its records are in the answer), so the log-free
        // counts stay exact.
        let stale = n1.export_memory("n1");
        n1.flush(true).unwrap();
        q.poll_catalog().unwrap();
        q.install_node_memory(vec![stale, n2.export_memory("n2")], Vec::new()).unwrap();
        assert_eq!(q.snapshot().segments.len(), 3, "n1's newest segment hidden");
        assert_eq!(q.get_trace(&t).unwrap().unwrap().0.len(), 7);

        // A node that did not answer: every answer says so.
        q.install_node_memory(vec![n1.export_memory("n1")], vec!["ingest node x did not answer".into()])
            .unwrap();
        assert_eq!(q.damage_in_range(None, None), ["ingest node x did not answer"]);
        assert_eq!(q.damage_for_trace(&t), ["ingest node x did not answer"]);

        // The query node wrote nothing to the bucket.
        let mut objects: Vec<_> = walk(bucket.path());
        objects.retain(|p| !p.contains("/nodes/n1/") && !p.contains("/nodes/n2/"));
        assert!(objects.is_empty(), "{objects:?}");

        // A segment deleted from the bucket (retention, compaction) leaves
        // the catalog at the next poll.
        assert_eq!(n1.snapshot().segments.len(), 2);
        let gone = n1.snapshot().segments[0].meta.id.clone();
        n1.remote.as_ref().unwrap().delete(&gone).unwrap();
        q.install_node_memory(Vec::new(), Vec::new()).unwrap();
        let st = q.poll_catalog().unwrap();
        assert_eq!(
            (st.removed, st.segments),
            (1, 3),
            "{st:?} {:?}",
            q.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect::<Vec<_>>()
        );
        assert!(!q.snapshot().segments.iter().any(|s| s.meta.id == gone));
    }

    /// Opening an ingest node removes incomplete objects only under its
    /// own prefix: another node's upload in progress is left alone.
    #[test]
    fn test_start_up_reconciliation_stays_in_the_node_prefix() {
        let bucket = tempfile::tempdir().unwrap();
        let url = format!("file://{}", bucket.path().display());
        let other = bucket.path().join("nodes/n2/segments/01UPLOADING/spans.parquet");
        fs::create_dir_all(other.parent().unwrap()).unwrap();
        fs::write(&other, b"half").unwrap();
        let legacy = bucket.path().join("segments/01HALF/spans.parquet");
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(&legacy, b"half").unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = Storage::open(d.path(), store_config(&node_storage_url(&url, "n1"))).unwrap();
        assert!(other.exists() && legacy.exists());
        drop(s);
        // A query node never deletes either.
        let dq = tempfile::tempdir().unwrap();
        let q = Storage::open(dq.path(), mirror_config(&url)).unwrap();
        assert_eq!(q.poll_catalog().unwrap().segments, 0);
        assert!(other.exists() && legacy.exists());
    }

    /// A span a retrying sender delivered to both ingest nodes is one span
    /// in the query node's memory, so listings and RED count it once, as
    /// a single node's head does (breaker: services counted it twice).
    #[tokio::test]
    async fn test_a_span_sent_to_two_nodes_is_one_in_memory() {
        let (_bucket, _dirs, n1, n2, q) = two_nodes_and_a_query_node();
        append_spans_of(&n1, 1, 0, 2).await;
        append_spans_of(&n2, 1, 1, 2).await;
        q.poll_catalog().unwrap();
        q.install_node_memory(vec![n1.export_memory("n1"), n2.export_memory("n2")], Vec::new()).unwrap();
        let mut visited = 0;
        q.catalog.walk(None, |_, t| visited += t.spans.len());
        assert_eq!(visited, 3, "spans 0 and 1 from n1, 1 and 2 from n2: three spans");
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }
}
