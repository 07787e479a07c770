//! The compact role (`--role compact`, issue 14): compaction and retention
//! across every node's prefix of one bucket, by the one node holding the
//! compactor lease ([`crate::lease`]).
//!
//! The compactor's storage is a mirror, as a query node's
//! ([`crate::StorageConfig::mirror`]): its catalog is the bucket's listing,
//! polled ([`Storage::poll_catalog`]). On it, while the lease is held:
//!
//! - [`Storage::compact_nodes`] picks inputs with the single node's
//!   size-tiered planner ([`crate::compact::pick_inputs_by`]) among the
//!   segments of every prefix, so a trace split across two ingest nodes
//!   ends in one segment; merges them as a single node does; and commits
//!   the output under the shared `segments/` (or `tenants/{t}/segments/`),
//!   `meta.json` last, listing its inputs in `replaces` and the lease epoch
//!   in `compaction_epoch`. Nothing is deleted then.
//! - Every reader (a query node, the compactor itself) hides, from its next
//!   poll on, the segments a committed output replaces ([`visibility`]).
//! - [`Storage::delete_replaced`] deletes a hidden segment once
//!   `compaction.deletion_delay` has passed since the segment hiding it was
//!   committed ([`deletable`]), checking the lease right before each
//!   deletion. What is pending is recomputed from the listing every time,
//!   so a restarted or new holder finishes a predecessor's deletions.
//! - [`Storage::enforce_node_retention`] deletes segments past `retention`
//!   (and the oldest past `retention_bytes`), as a single node does.
//!
//! An ingest node's segment younger than `compaction.min_age` is left
//! alone by both: its records may still be in that node's WAL, whose
//! replay skips only what the node's own segments hold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cluster::segments_parts;
use crate::compact::{merge, pick_segments, read_all, CompactStats};
use crate::segment::{self, Segment, META_FILE};
use crate::{now_unix_nano, remove_segment_dir, Error, Result, Storage};

/// One committed segment as a poll of the bucket lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The segment ID.
    pub id: String,
    /// The ingest node whose prefix holds it (`None`: the shared
    /// `segments/`, where the compactor writes and a `--role all` node
    /// writes).
    pub node: Option<String>,
    /// [`segment::SegmentMeta::replaces`].
    pub replaces: Vec<String>,
    /// [`segment::SegmentMeta::compaction_epoch`].
    pub epoch: u64,
    /// [`segment::SegmentMeta::created_unix_nano`].
    pub created_unix_nano: u64,
    /// When its `meta.json` was stored (Unix ns, the store's clock).
    pub committed_unix_nano: u64,
}

/// What hides what among the listed segments ([`visibility`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Hidden segment ID → the ID of the listed output that hides it.
    pub hidden: HashMap<String, String>,
    /// Every ID a winning output (or an output one replaces) lists in
    /// `replaces`, listed or already deleted.
    pub replaced: HashSet<String>,
}

/// Which listed segments readers hide. Outputs (segments with `replaces`)
/// are taken by descending (epoch, ID), newest first:
///
/// - an output another one already replaces stays hidden, and its own
///   inputs are hidden too (its records are in the output replacing it);
/// - an output some of whose inputs an output taken before already
///   replaces loses (a deposed holder's late output, or a lower epoch's):
///   it is hidden, and its inputs count for nothing (those no winner
///   replaces stay visible);
/// - any other output wins: its inputs are hidden.
///
/// So each record is visible exactly once whatever the outputs of several
/// epochs, provided every output holds exactly its inputs' records.
pub fn visibility(listed: &[Listed]) -> Visibility {
    let mut outputs: Vec<&Listed> = listed.iter().filter(|l| !l.replaces.is_empty()).collect();
    outputs.sort_by(|a, b| (b.epoch, &b.id).cmp(&(a.epoch, &a.id)));
    let mut v = Visibility::default();
    let mut claimed: HashMap<&str, &str> = HashMap::new();
    let mut losers: HashSet<&str> = HashSet::new();
    for o in outputs {
        let replaced_itself = v.hidden.contains_key(&o.id) && !losers.contains(o.id.as_str());
        if !replaced_itself {
            if let Some(c) = o.replaces.iter().find_map(|r| claimed.get(r.as_str())) {
                v.hidden.insert(o.id.clone(), c.to_string());
                losers.insert(&o.id);
                continue;
            }
        }
        for r in &o.replaces {
            claimed.entry(r).or_insert(&o.id);
            v.hidden.entry(r.clone()).or_insert_with(|| o.id.clone());
            v.replaced.insert(r.clone());
        }
    }
    v
}

/// The hidden segments that may be deleted at `now_unix_nano`: the
/// segment hiding each was committed at least `delay_ns` ago, and it
/// hides no listed segment itself (an output's own inputs go first, or
/// they would come back into view once it is gone).
pub fn deletable(listed: &[Listed], vis: &Visibility, now_unix_nano: u64, delay_ns: u64) -> Vec<String> {
    let by_id: HashMap<&str, &Listed> = listed.iter().map(|l| (l.id.as_str(), l)).collect();
    let hiding: HashSet<&str> = vis
        .hidden
        .iter()
        .filter(|(id, _)| by_id.contains_key(id.as_str()))
        .map(|(_, h)| h.as_str())
        .collect();
    let mut out: Vec<String> = listed
        .iter()
        .filter(|l| !hiding.contains(l.id.as_str()))
        .filter(|l| {
            vis.hidden
                .get(&l.id)
                .and_then(|h| by_id.get(h.as_str()))
                .is_some_and(|h| h.committed_unix_nano.saturating_add(delay_ns) <= now_unix_nano)
        })
        .map(|l| l.id.clone())
        .collect();
    out.sort();
    out
}

/// The segments of `visible` (oldest first by when received) that the
/// compactor may take as compaction inputs or expire at `now_unix_nano`:
/// not an output whose inputs are still listed (they go first), and, in an
/// ingest node's prefix, at least `min_age_ns` old.
pub fn eligible<'a>(
    visible: &'a [Listed],
    vis: &Visibility,
    all: &[Listed],
    now_unix_nano: u64,
    min_age_ns: u64,
) -> Vec<&'a Listed> {
    let listed: HashSet<&str> = all.iter().map(|l| l.id.as_str()).collect();
    let hiding: HashSet<&str> =
        vis.hidden.iter().filter(|(id, _)| listed.contains(id.as_str())).map(|(_, h)| h.as_str()).collect();
    visible
        .iter()
        .filter(|l| !hiding.contains(l.id.as_str()))
        .filter(|l| l.node.is_none() || l.created_unix_nano.saturating_add(min_age_ns) <= now_unix_nano)
        .collect()
}

/// Every listed segment, the visibility, and the catalog's segments with
/// their listing, oldest first.
type ClusterView = (Vec<Listed>, Visibility, Vec<(Arc<Segment>, Listed)>);

impl Storage {
    /// The bucket's object store and the path of its compactor lease
    /// object ([`crate::lease::lease_path`] of the shared prefix), `None`
    /// without an object store.
    pub fn lease_target(&self) -> Option<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
        self.remote.as_ref().map(|r| {
            let (store, prefix) = r.store_and_prefix();
            (store, crate::lease::lease_path(prefix.as_ref()))
        })
    }

    /// The compactor's view of the last poll: every listed segment, the
    /// visibility, and the catalog's (visible) segments with their listing.
    fn cluster_view(&self) -> ClusterView {
        let m = self.mirror.lock();
        let (all, vis) = (m.listed.clone(), m.vis.clone());
        drop(m);
        let by_id: HashMap<&str, &Listed> = all.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut segs: Vec<(Arc<Segment>, Listed)> = self
            .snapshot()
            .segments
            .into_iter()
            .filter_map(|s| by_id.get(s.meta.id.as_str()).map(|l| ((*l).clone(), s)))
            .map(|(l, s)| (s, l))
            .collect();
        segs.sort_by(|a, b| (a.1.created_unix_nano, &a.1.id).cmp(&(b.1.created_unix_nano, &b.1.id)));
        (all, vis, segs)
    }

    /// The object store of the prefix `node` (`None`: the shared one) for
    /// this storage's tenant.
    fn prefix_remote(&self, node: Option<&str>) -> Result<Arc<crate::remote::Remote>> {
        let (true, Some(base)) = (self.cfg.mirror, self.remote.as_ref()) else {
            return Err(Error::Config("the compact role needs a mirror of the bucket".into()));
        };
        base.at(&segments_parts(node, self.cfg.mirror_tenant.as_deref()))
    }

    /// One compaction across every node's prefix (see the module doc),
    /// under lease epoch `epoch`; `held` says whether the lease is still
    /// held (checked before the output is uploaded). The output is
    /// committed in the bucket when this returns `Ok` with inputs, and the
    /// catalog polled again (the inputs hidden). Deletes nothing.
    /// Blocking.
    ///
    /// # Errors
    /// [`Error::Config`] on a storage that is not a mirror; an input that
    /// cannot be read, or an output that cannot be written or uploaded
    /// (nothing of it is left in the bucket then, best effort).
    pub fn compact_nodes(&self, epoch: u64, held: &dyn Fn() -> bool) -> Result<CompactStats> {
        let target = self.prefix_remote(None)?;
        let _maint = self.maintenance_lock.lock();
        let cfg = &self.cfg.compaction;
        let (all, vis, segs) = self.cluster_view();
        let visible: Vec<Listed> = segs.iter().map(|(_, l)| l.clone()).collect();
        let ok: HashSet<&str> =
            eligible(&visible, &vis, &all, now_unix_nano(), cfg.min_age.as_nanos() as u64)
                .into_iter()
                .map(|l| l.id.as_str())
                .collect();
        let candidates: Vec<Arc<Segment>> =
            segs.iter().filter(|(_, l)| ok.contains(l.id.as_str())).map(|(s, _)| s.clone()).collect();
        let Some(inputs) = pick_segments(&candidates, cfg) else { return Ok(CompactStats::default()) };
        drop(candidates);
        drop(segs);
        let t0 = std::time::Instant::now();
        let (traces, duplicate_spans) = merge(&inputs, |seg| read_all(seg))?;
        let mut stats = CompactStats::of_merge(&inputs, &traces, duplicate_spans);
        let created = inputs.iter().map(|s| s.meta.created_unix_nano).min().unwrap_or(0);
        let replaces: Vec<String> = inputs.iter().map(|s| s.meta.id.clone()).collect();
        let root = self.segments_dir();
        let (mut meta, _) =
            segment::write_segment_replacing(&root, &self.cfg.segment, &traces, created, replaces)?;
        drop(traces);
        let dir = root.join(&meta.id);
        meta.compaction_epoch = epoch;
        let committed = std::fs::write(dir.join(META_FILE), serde_json::to_vec_pretty(&meta)?)
            .map_err(Error::from)
            .and_then(|()| {
                if held() {
                    target.upload(&dir, &meta.id)
                } else {
                    Err(Error::Config("compactor lease lost before the output was uploaded".into()))
                }
            });
        if let Err(e) = committed {
            if let Err(d) = target.delete(&meta.id) {
                tracing::warn!(segment = %meta.id, error = %d, "cannot remove a failed upload from the bucket");
            }
            let _ = remove_segment_dir(&root, &dir);
            return Err(e);
        }
        stats.bytes_out = meta.bytes;
        self.count_compaction(&stats);
        tracing::info!(
            output = %meta.id,
            epoch,
            inputs = stats.inputs,
            input_ids = ?meta.replaces,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            traces = stats.traces,
            duplicate_spans = stats.duplicate_spans,
            seconds = t0.elapsed().as_secs_f64(),
            "compacted segments across node prefixes"
        );
        drop(inputs);
        drop(_maint);
        self.poll_catalog()?;
        self.trim_cache();
        Ok(stats)
    }

    /// Deletes from the bucket the hidden segments whose deletion delay
    /// has passed ([`deletable`], from the last poll), checking `held`
    /// right before each deletion (stopping at the first `false`); then
    /// polls. Returns the number deleted. Blocking.
    ///
    /// # Errors
    /// [`Error::Config`] on a storage that is not a mirror; object-store
    /// errors (what was deleted before stays deleted).
    pub fn delete_replaced(&self, held: &dyn Fn() -> bool) -> Result<usize> {
        let delay = self.cfg.compaction.deletion_delay.as_nanos() as u64;
        let _maint = self.maintenance_lock.lock();
        let (all, vis, _) = self.cluster_view();
        let node: HashMap<&str, Option<&str>> =
            all.iter().map(|l| (l.id.as_str(), l.node.as_deref())).collect();
        let mut n = 0;
        for id in deletable(&all, &vis, now_unix_nano(), delay) {
            if !held() {
                break;
            }
            let owner = node.get(id.as_str()).copied().flatten();
            self.prefix_remote(owner)?.delete(&id)?;
            tracing::info!(segment = %id, node = owner.unwrap_or("-"), replaced_by = vis.hidden.get(&id).map(String::as_str).unwrap_or("-"), "deleted a compacted segment from the bucket");
            n += 1;
        }
        drop(_maint);
        if n > 0 {
            self.poll_catalog()?;
        }
        Ok(n)
    }

    /// Retention across every prefix: deletes the segments received longer
    /// ago than `retention`, then, with `retention_bytes`, the oldest while
    /// all visible segments together take more; only eligible ones
    /// ([`eligible`]: an ingest node's at least `compaction.min_age` old,
    /// no output whose inputs are still listed). Checks `held` right before
    /// each deletion; then polls. Returns the number deleted. Blocking.
    ///
    /// # Errors
    /// As [`Storage::delete_replaced`].
    pub fn enforce_node_retention(&self, held: &dyn Fn() -> bool) -> Result<usize> {
        let _maint = self.maintenance_lock.lock();
        let now = now_unix_nano();
        let cutoff = now.saturating_sub(self.cfg.retention.as_nanos() as u64);
        let (all, vis, segs) = self.cluster_view();
        let visible: Vec<Listed> = segs.iter().map(|(_, l)| l.clone()).collect();
        let ok: HashSet<&str> =
            eligible(&visible, &vis, &all, now, self.cfg.compaction.min_age.as_nanos() as u64)
                .into_iter()
                .map(|l| l.id.as_str())
                .collect();
        let mut total: u64 = segs.iter().map(|(s, _)| s.meta.bytes).sum();
        let mut doomed: Vec<(String, Option<String>, u64)> = Vec::new();
        // Oldest first: `segs` is sorted by when received.
        for (s, l) in &segs {
            let over = self.cfg.retention_bytes.is_some_and(|limit| total > limit);
            if ok.contains(l.id.as_str()) && (l.created_unix_nano < cutoff || over) {
                total -= s.meta.bytes;
                doomed.push((l.id.clone(), l.node.clone(), s.meta.bytes));
            }
        }
        drop(segs);
        let mut n = 0;
        for (id, node, bytes) in doomed {
            if !held() {
                break;
            }
            self.prefix_remote(node.as_deref())?.delete(&id)?;
            tracing::info!(segment = %id, node = node.as_deref().unwrap_or("-"), bytes, "retention: deleted segment from the bucket");
            self.metrics.retention_deleted_segments.inc();
            n += 1;
        }
        drop(_maint);
        if n > 0 {
            self.poll_catalog()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::pick_inputs_by;
    use crate::StorageConfig;

    fn l(id: &str, node: Option<&str>, replaces: &[&str], epoch: u64, committed: u64) -> Listed {
        Listed {
            id: id.into(),
            node: node.map(str::to_string),
            replaces: replaces.iter().map(|s| s.to_string()).collect(),
            epoch,
            created_unix_nano: committed,
            committed_unix_nano: committed,
        }
    }

    fn hidden(v: &Visibility) -> Vec<(&str, &str)> {
        let mut h: Vec<(&str, &str)> = v.hidden.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        h.sort();
        h
    }

    /// An output hides its inputs; of two outputs replacing overlapping
    /// inputs the higher epoch wins, and the loser's other inputs stay
    /// visible; an output replaced by another keeps its own inputs hidden.
    #[test]
    fn test_visibility_replaces_and_epochs() {
        let x = l("X", Some("n1"), &[], 0, 1);
        let y = l("Y", Some("n2"), &[], 0, 1);
        let z = l("Z", Some("n2"), &[], 0, 1);
        assert_eq!(visibility(&[x.clone(), y.clone()]), Visibility::default());
        let a = l("A", None, &["X", "Y"], 1, 10);
        let v = visibility(&[x.clone(), y.clone(), a.clone()]);
        assert_eq!(hidden(&v), [("X", "A"), ("Y", "A")]);
        // A deposed holder's late output (epoch 1, a later ID) against the
        // new holder's (epoch 2): epoch 2 wins; Z, which only the loser
        // replaced, stays visible.
        let late = l("ZLATE", None, &["X", "Z"], 1, 20);
        let b = l("B", None, &["X", "Y"], 2, 15);
        let v = visibility(&[x.clone(), y.clone(), z.clone(), late.clone(), b.clone()]);
        assert_eq!(hidden(&v), [("X", "B"), ("Y", "B"), ("ZLATE", "B")]);
        assert!(!v.replaced.contains("Z"), "a loser's inputs count for nothing");
        // Same epoch: the later ID wins (cannot happen with one holder per
        // epoch, but the rule is total).
        let a2 = l("A2", None, &["X"], 1, 11);
        let v = visibility(&[x.clone(), y.clone(), a.clone(), a2]);
        assert_eq!(hidden(&v), [("A", "A2"), ("X", "A2")]);
        // Nested: C replaces A, whose inputs are still listed: all hidden.
        let c = l("C", None, &["A"], 1, 30);
        let v = visibility(&[x.clone(), y.clone(), a.clone(), c.clone()]);
        assert_eq!(hidden(&v), [("A", "C"), ("X", "A"), ("Y", "A")]);
        // Inputs already deleted are still "replaced" (known IDs).
        let v = visibility(std::slice::from_ref(&a));
        assert!(v.replaced.contains("X") && v.hidden.contains_key("X"));
    }

    /// Pending deletions come from the listing alone: a hidden segment
    /// goes once its hider is `delay` old, an output's inputs before the
    /// output; a restart (a fresh computation) finds the same.
    #[test]
    fn test_pending_deletions_are_recomputed_from_the_listing() {
        let s = 1_000_000_000u64;
        let x = l("X", Some("n1"), &[], 0, 0);
        let y = l("Y", Some("n2"), &[], 0, 0);
        let a = l("A", None, &["X", "Y"], 1, 100 * s);
        let listed = vec![x, y, a.clone()];
        let v = visibility(&listed);
        assert!(deletable(&listed, &v, 100 * s + 299 * s, 300 * s).is_empty(), "before the delay");
        assert_eq!(deletable(&listed, &v, 400 * s, 300 * s), ["X", "Y"]);
        // X deleted, Y not yet (a crash): the next holder deletes Y.
        let listed = vec![listed[1].clone(), a.clone()];
        let v = visibility(&listed);
        assert_eq!(deletable(&listed, &v, 400 * s, 300 * s), ["Y"]);
        // C replaces A while A's input Y is still listed: Y goes first, A after.
        let c = l("C", None, &["A"], 2, 200 * s);
        let listed = vec![l("Y", Some("n2"), &[], 0, 0), a.clone(), c.clone()];
        let v = visibility(&listed);
        assert_eq!(deletable(&listed, &v, 1000 * s, 300 * s), ["Y"]);
        let listed = vec![a.clone(), c];
        let v = visibility(&listed);
        assert_eq!(deletable(&listed, &v, 1000 * s, 300 * s), ["A"]);
        // A losing output goes after the winner's delay; its own unclaimed
        // input stays.
        let listed = vec![
            l("X", Some("n1"), &[], 0, 0),
            l("Z", Some("n2"), &[], 0, 0),
            l("B", None, &["X"], 2, 100 * s),
            l("L", None, &["X", "Z"], 1, 150 * s),
        ];
        let v = visibility(&listed);
        assert_eq!(deletable(&listed, &v, 399 * s, 300 * s), Vec::<String>::new());
        assert_eq!(deletable(&listed, &v, 400 * s, 300 * s), ["L", "X"]);
    }

    /// The planner's candidates across prefixes: every node's segments and
    /// the shared ones, but no ingest node's segment younger than
    /// `min_age` and no output whose inputs are still listed.
    #[test]
    fn test_eligible_inputs_across_prefixes() {
        let s = 1_000_000_000u64;
        let old1 = l("O1", Some("n1"), &[], 0, 10 * s);
        let old2 = l("O2", Some("n2"), &[], 0, 20 * s);
        let young = l("Y", Some("n2"), &[], 0, 95 * s);
        let shared = l("S", None, &["GONE"], 1, 90 * s);
        let busy = l("B", None, &["I"], 1, 50 * s);
        let input = l("I", Some("n1"), &[], 0, 5 * s);
        let all = vec![old1.clone(), old2.clone(), young.clone(), shared.clone(), busy.clone(), input];
        let v = visibility(&all);
        let visible: Vec<Listed> = all.iter().filter(|x| !v.hidden.contains_key(&x.id)).cloned().collect();
        let ids: Vec<&str> =
            eligible(&visible, &v, &all, 100 * s, 10 * s).iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["O1", "O2", "S"]);
        // The planner then merges segments of two node prefixes into one.
        let cfg = crate::CompactionConfig { min_inputs: 2, ..Default::default() };
        assert_eq!(pick_inputs_by(&[(10, 10), (10, 10), (10, 10)], &cfg), Some(vec![0, 1, 2]));
    }

    fn s3(moto: &crate::testsuite::Moto, url: &str) -> crate::StorageConfig {
        let mut c = crate::testsuite::test_config();
        c.storage_url = Some(url.to_string());
        c.storage_options = moto.options();
        c
    }

    fn compactor(
        moto: &crate::testsuite::Moto,
        url: &str,
        delay: std::time::Duration,
    ) -> crate::StorageConfig {
        let mut c = s3(moto, url);
        c.mirror = true;
        c.compaction.min_inputs = 2;
        c.compaction.min_age = std::time::Duration::ZERO;
        c.compaction.deletion_delay = delay;
        c
    }

    /// Against a real S3 API (moto): a trace split across two ingest
    /// nodes' prefixes is compacted into one shared segment while a query
    /// node polls through it (always the whole trace, once); nothing is
    /// deleted before the delay nor by a holder that lost the lease; a
    /// deposed holder's late output loses to the newer epoch; a new holder
    /// finishes the deletions; retention deletes across prefixes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_s3_compaction_across_node_prefixes() {
        use crate::cluster::{node_storage_url, MemoryExport};
        use crate::testsuite::{append_spans_of, trace_id, Moto};
        use std::time::Duration;
        let moto = Moto::start();
        moto.create_bucket("compact-test");
        let url = "s3://compact-test/p";
        let dirs: Vec<tempfile::TempDir> = (0..7).map(|_| tempfile::tempdir().unwrap()).collect();
        let n1 = Storage::open(dirs[0].path(), s3(&moto, &node_storage_url(url, "n1"))).unwrap();
        let n2 = Storage::open(dirs[1].path(), s3(&moto, &node_storage_url(url, "n2"))).unwrap();
        n1.replay().unwrap();
        n2.replay().unwrap();
        append_spans_of(&n1, 1, 0, 2).await;
        n1.flush(true).unwrap();
        append_spans_of(&n2, 1, 2, 3).await;
        n2.flush(true).unwrap();
        append_spans_of(&n1, 2, 0, 4).await;
        n1.flush(true).unwrap();
        let node_ids = |s: &Storage| s.remote.as_ref().unwrap().list().unwrap().committed;
        let inputs: Vec<String> = [node_ids(&n1), node_ids(&n2)].concat();
        assert_eq!(inputs.len(), 3);

        let q = Storage::open(dirs[2].path(), StorageConfig { mirror: true, ..s3(&moto, url) }).unwrap();
        let count = |s: &Storage, t: u8| s.get_trace(&trace_id(t)).unwrap().map_or(0, |x| x.0.len());
        assert_eq!(q.poll_catalog().unwrap().segments, 3);
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));

        let hour = Duration::from_secs(3600);
        let c = Storage::open(dirs[3].path(), compactor(&moto, url, hour)).unwrap();
        // A holder about to be deposed: its view is of before c's compaction.
        let old = Storage::open(dirs[4].path(), compactor(&moto, url, hour)).unwrap();
        c.poll_catalog().unwrap();
        old.poll_catalog().unwrap();
        let st = c.compact_nodes(2, &|| true).unwrap();
        assert_eq!((st.inputs, st.spans), (3, 9));
        assert_eq!(c.snapshot().segments.len(), 1, "the compactor's own poll hides the inputs");
        let out = c.snapshot().segments[0].meta.clone();
        assert_eq!(out.compaction_epoch, 2);
        let mut replaces = out.replaces.clone();
        replaces.sort();
        let mut want = inputs.clone();
        want.sort();
        assert_eq!(replaces, want);
        let shared = c.prefix_remote(None).unwrap();
        assert_eq!(shared.list().unwrap().committed, [out.id.as_str()]);

        // The query node before and after its next poll: whole, once.
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));
        let st = q.poll_catalog().unwrap();
        assert_eq!((st.segments, st.removed), (1, 3));
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));

        // Nothing deleted before the delay.
        assert_eq!(c.delete_replaced(&|| true).unwrap(), 0);
        assert_eq!([node_ids(&n1), node_ids(&n2)].concat().len(), 3);

        // The deposed holder (epoch 1) finishes its compaction late: its
        // output loses to epoch 2 on every reader.
        let late = old.compact_nodes(1, &|| true).unwrap();
        assert_eq!(late.inputs, 3);
        assert_eq!(shared.list().unwrap().committed.len(), 2);
        q.poll_catalog().unwrap();
        assert_eq!(
            q.snapshot().segments.iter().map(|s| s.meta.id.clone()).collect::<Vec<_>>(),
            [out.id.as_str()]
        );
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));

        // A new holder (deletion delay 0) that lost the lease deletes
        // nothing; holding it, it deletes the inputs and the late output.
        // The store's clock stamps the commit (to the second at most).
        std::thread::sleep(Duration::from_millis(1100));
        let next = Storage::open(dirs[5].path(), compactor(&moto, url, Duration::ZERO)).unwrap();
        next.poll_catalog().unwrap();
        assert_eq!(next.delete_replaced(&|| false).unwrap(), 0);
        assert_eq!([node_ids(&n1), node_ids(&n2)].concat().len(), 3);
        assert_eq!(next.delete_replaced(&|| true).unwrap(), 4);
        assert!(node_ids(&n1).is_empty() && node_ids(&n2).is_empty());
        assert_eq!(shared.list().unwrap().committed, [out.id.as_str()]);
        q.poll_catalog().unwrap();
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));

        // The ingest nodes still list their deleted segments: known to the
        // query node (no poll per query), and not counted twice.
        let before = q.last_poll_unix_nano();
        let exports: Vec<MemoryExport> = vec![n1.export_memory("n1"), n2.export_memory("n2")];
        assert_eq!(exports.iter().map(|e| e.segments.len()).sum::<usize>(), 3);
        q.install_node_memory(exports, Vec::new()).unwrap();
        assert_eq!(q.last_poll_unix_nano(), before, "no poll for replaced segments");
        assert_eq!((count(&q, 1), count(&q, 2)), (5, 4));

        // Retention across prefixes: a holder deletes, a non-holder not.
        append_spans_of(&n2, 3, 0, 1).await;
        n2.flush(true).unwrap();
        let mut rc = compactor(&moto, url, Duration::ZERO);
        rc.retention = Duration::from_nanos(1);
        let r = Storage::open(dirs[6].path(), rc).unwrap();
        r.poll_catalog().unwrap();
        assert_eq!(r.enforce_node_retention(&|| false).unwrap(), 0);
        assert_eq!(r.enforce_node_retention(&|| true).unwrap(), 2);
        assert!(node_ids(&n2).is_empty() && shared.list().unwrap().committed.is_empty());
        assert_eq!(r.metrics.retention_deleted_segments.get(), 2);

        // Now the nodes' stale IDs are in no listing at all: one poll
        // finds them gone, later answers cost none.
        q.poll_catalog().unwrap();
        let exports = || vec![n1.export_memory("n1"), n2.export_memory("n2")];
        q.install_node_memory(exports(), Vec::new()).unwrap();
        let before = q.last_poll_unix_nano();
        q.install_node_memory(exports(), Vec::new()).unwrap();
        assert_eq!(q.last_poll_unix_nano(), before, "no poll for segments known deleted");
        assert_eq!(q.snapshot().segments.len(), 0);
    }
}
