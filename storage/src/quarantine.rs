//! Damaged segments are quarantined, never served and never deleted.
//!
//! A segment is damaged when it cannot be opened, or when a read of it
//! fails in a way that retrying cannot fix: a file that does not decode
//! (Parquet, tantivy, the trace-ID index, `meta.json`), a row that does not
//! decode, a file gone from a local-only segment, or a panic inside the
//! Parquet or tantivy decoders (they may panic on garbage rather than
//! return an error). I/O and object-store faults that may pass (a timeout,
//! too many open files) are not damage: the read fails as before and is
//! retried by the client.
//!
//! Quarantine takes the segment out of the catalog in one step (readers
//! then never see it again), moves its directory to
//! `segments/quarantine/<id>` with a `quarantine.json` saying why and when,
//! and, with object storage, writes the same record next to the segment's
//! objects, which stay where they are (`Remote::list` reports the
//! segment as quarantined and the cache never loads it again). The segment
//! is logged once at ERROR, counted in `skein_segments_quarantined_total`
//! and `skein_quarantined_segments`, and listed by
//! [`Storage::quarantined`] (`GET /api/v1/status`).
//!
//! Answers that would have read a quarantined segment say so: the query
//! engine asks [`Storage::damage_for_trace`] and
//! [`Storage::damage_in_range`] after each read and reports the segments
//! they name as warnings (a partial answer), instead of failing with a 500
//! or pretending to be whole. This follows PostgreSQL's and etcd's habit of
//! saying what was dropped; the operator decides what to do with the files
//! (`docs/operations.md`, "Damaged files"). Removing a quarantined
//! directory (and, with object storage, the segment's objects) clears its
//! warnings at the next start.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::TraceId;
use crate::segment::{self, Segment, SegmentMeta, TraceIndexEntry, META_FILE};
use crate::{now_unix_nano, Error, Result, Storage};

/// The directory under `data_dir/segments` holding quarantined segments.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The record written beside a quarantined segment's files (locally and,
/// with object storage, in the store).
pub const RECORD_FILE: &str = "quarantine.json";

/// A segment taken out of service because it is damaged.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedSegment {
    /// The segment's ID (its directory name).
    pub id: String,
    /// Why: the error that showed the damage.
    pub reason: String,
    /// When it was quarantined, Unix ns.
    pub time_unix_nano: u64,
    /// The earliest and latest record time its `meta.json` gives, when
    /// that file is readable (`None`: unknown, so every time range may
    /// have lost data to it).
    pub min_time_unix_nano: Option<u64>,
    /// See `min_time_unix_nano`.
    pub max_time_unix_nano: Option<u64>,
    /// Its trace-ID index, when readable (`None`: any trace may have lost
    /// data to it).
    #[serde(skip)]
    trace_index: Option<Arc<Vec<TraceIndexEntry>>>,
}

impl QuarantinedSegment {
    /// Whether the segment may hold records of trace `id`.
    pub fn may_hold(&self, id: &TraceId) -> bool {
        self.trace_index.as_ref().is_none_or(|ix| ix.binary_search_by(|e| e.trace_id.cmp(id)).is_ok())
    }

    /// Whether the segment may hold records in `[start, end]` (Unix ns,
    /// either side open when `None`).
    pub fn may_overlap(&self, start: Option<u64>, end: Option<u64>) -> bool {
        !(start.zip(self.max_time_unix_nano).is_some_and(|(s, max)| max < s)
            || end.zip(self.min_time_unix_nano).is_some_and(|(e, min)| min > e))
    }

    /// The warning an answer carries when it may miss this segment's data.
    pub fn warning(&self) -> String {
        format!("segment {} is quarantined ({}); this answer may be missing its data", self.id, self.reason)
    }
}

/// What `quarantine.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    reason: String,
    time_unix_nano: u64,
}

impl Error {
    /// Whether this error shows a damaged segment (see the module comment)
    /// rather than a fault that may pass.
    pub fn is_damage(&self) -> bool {
        fn io_damage(e: &std::io::Error) -> bool {
            use std::io::ErrorKind::*;
            matches!(e.kind(), InvalidData | UnexpectedEof | NotFound)
        }
        // The Arrow reader passes a failed fetch from the object store (or
        // a failed local read) on as text inside its error; such a read may
        // succeed when retried.
        let passing_fault = |text: String| text.contains("object store:") || text.contains("I/O error");
        match self {
            Error::Corrupt(_) | Error::Json(_) => true,
            Error::Io(e) => io_damage(e),
            Error::Arrow(arrow_schema::ArrowError::IoError(_, e)) => io_damage(e),
            Error::Arrow(e) => !passing_fault(e.to_string()),
            Error::Parquet(parquet::errors::ParquetError::External(e)) => {
                e.downcast_ref::<std::io::Error>().is_some_and(io_damage)
            }
            Error::Parquet(e) => !passing_fault(e.to_string()),
            Error::Index(tantivy::TantivyError::IoError(e)) => io_damage(e),
            Error::Index(
                tantivy::TantivyError::SystemError(_)
                | tantivy::TantivyError::LockFailure(..)
                | tantivy::TantivyError::Poisoned,
            ) => false,
            Error::Index(_) => true,
            _ => false,
        }
    }
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Storage {
    /// The segments in quarantine, oldest quarantine first.
    pub fn quarantined(&self) -> Vec<QuarantinedSegment> {
        self.quarantine.read().clone()
    }

    /// Warnings for a lookup of trace `id`: one per quarantined segment
    /// that may hold part of it.
    pub fn damage_for_trace(&self, id: &TraceId) -> Vec<String> {
        let mut v: Vec<String> = self
            .quarantine
            .read()
            .iter()
            .filter(|q| q.may_hold(id))
            .map(QuarantinedSegment::warning)
            .collect();
        v.extend(self.node_warnings());
        v
    }

    /// Warnings for a search over `[start, end]` (Unix ns, open when
    /// `None`): one per quarantined segment that may hold records in it.
    pub fn damage_in_range(&self, start: Option<u64>, end: Option<u64>) -> Vec<String> {
        let mut v: Vec<String> = self
            .quarantine
            .read()
            .iter()
            .filter(|q| q.may_overlap(start, end))
            .map(QuarantinedSegment::warning)
            .collect();
        v.extend(self.node_warnings());
        v
    }

    /// Runs read `f` on `seg`: `Ok(Some(_))` with its answer, `Ok(None)`
    /// when the read showed damage (the segment is then quarantined and
    /// the caller goes on without it), `Err` for a fault that may pass.
    /// Every read of a segment's files goes through here, so that damage
    /// found by any reader takes the segment out of service.
    ///
    /// # Errors
    /// The errors of `f` that are not damage ([`Error::is_damage`]).
    pub fn guarded<T>(&self, seg: &Arc<Segment>, f: impl FnOnce(&Segment) -> Result<T>) -> Result<Option<T>> {
        match catch_unwind(AssertUnwindSafe(|| f(seg))) {
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) if e.is_damage() => {
                self.quarantine_segment(seg, &e.to_string());
                Ok(None)
            }
            Ok(Err(e)) => Err(e),
            Err(p) => {
                self.quarantine_segment(seg, &format!("a decoder panicked: {}", panic_text(&*p)));
                Ok(None)
            }
        }
    }

    /// Takes a segment found damaged while open out of the catalog and into
    /// quarantine. Nothing happens when it has left the catalog already
    /// (quarantined by a concurrent read, or compacted or expired).
    pub(crate) fn quarantine_segment(&self, seg: &Arc<Segment>, reason: &str) {
        let removed = self.catalog.edit_segments(|segments| {
            let before = segments.len();
            segments.retain(|s| !Arc::ptr_eq(s, seg));
            self.gauges.segments.set(&self.metrics.segments, segments.len() as i64);
            segments.len() < before
        });
        if !removed {
            return;
        }
        self.metrics.segment_bytes.dec_by(seg.meta.bytes as i64);
        self.quarantine_dir(
            seg.dir(),
            &seg.meta.id,
            Some(&seg.meta),
            Some(Arc::new(seg.trace_index().to_vec())),
            reason,
        );
    }

    /// Moves segment directory `dir` (segment `id`, not in the catalog) to
    /// quarantine, records why, and lists it. A failure to move or record
    /// is logged: the segment is out of service for this run either way,
    /// and is found damaged again at the next start.
    pub(crate) fn quarantine_dir(
        &self,
        dir: &Path,
        id: &str,
        meta: Option<&SegmentMeta>,
        trace_index: Option<Arc<Vec<TraceIndexEntry>>>,
        reason: &str,
    ) {
        let time_unix_nano = now_unix_nano();
        tracing::error!(
            segment = %id,
            reason,
            dir = %dir.display(),
            "damaged segment quarantined: it is no longer read, and answers that would have read it say they are partial"
        );
        let qroot = self.segments_dir().join(QUARANTINE_DIR);
        let mut target = qroot.join(id);
        if target.exists() {
            target = qroot.join(format!("{id}-{time_unix_nano}"));
        }
        let record = Record { id: id.to_string(), reason: reason.to_string(), time_unix_nano };
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        let moved = fs::create_dir_all(&qroot)
            .and_then(|()| fs::rename(dir, &target))
            .and_then(|()| fs::write(target.join(RECORD_FILE), &json));
        if let Err(e) = moved {
            tracing::error!(segment = %id, error = %e, "cannot move a damaged segment to quarantine");
        }
        // A query node writes nothing to the bucket: the segment's owner
        // finds the damage itself.
        if let Some(r) = self.remote.as_ref().filter(|_| !self.cfg.mirror) {
            if let Err(e) = r.put(id, RECORD_FILE, json) {
                tracing::error!(segment = %id, error = %e, "cannot record the quarantine in the object store");
            }
        }
        let mut q = self.quarantine.write();
        q.push(QuarantinedSegment {
            id: id.to_string(),
            reason: reason.to_string(),
            time_unix_nano,
            min_time_unix_nano: meta.map(|m| m.min_time_unix_nano),
            max_time_unix_nano: meta.map(|m| m.max_time_unix_nano),
            trace_index,
        });
        self.metrics.segments_quarantined.inc();
        self.metrics.quarantined_segments.set(q.len() as i64);
    }

    /// Lists the segments quarantined by earlier runs (at open), with what
    /// can still be read of their meta and trace-ID index.
    pub(crate) fn load_quarantine(&self) -> Result<()> {
        let qroot = self.segments_dir().join(QUARANTINE_DIR);
        let mut out = Vec::new();
        if qroot.is_dir() {
            for e in fs::read_dir(&qroot)? {
                let p = e?.path();
                if !p.is_dir() {
                    continue;
                }
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let record: Option<Record> =
                    fs::read(p.join(RECORD_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
                let record = record.unwrap_or(Record {
                    id: name.clone(),
                    reason: format!("unknown (no readable {RECORD_FILE})"),
                    time_unix_nano: 0,
                });
                let meta: Option<SegmentMeta> =
                    fs::read(p.join(META_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
                let trace_index = segment::read_trace_index(&p).ok().map(Arc::new);
                tracing::warn!(segment = %record.id, reason = %record.reason, "segment in quarantine (answers that may need it say they are partial)");
                out.push(QuarantinedSegment {
                    id: record.id,
                    reason: record.reason,
                    time_unix_nano: record.time_unix_nano,
                    min_time_unix_nano: meta.as_ref().map(|m| m.min_time_unix_nano),
                    max_time_unix_nano: meta.as_ref().map(|m| m.max_time_unix_nano),
                    trace_index,
                });
            }
        }
        out.sort_by(|a, b| (a.time_unix_nano, &a.id).cmp(&(b.time_unix_nano, &b.id)));
        self.metrics.quarantined_segments.set(out.len() as i64);
        *self.quarantine.write() = out;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::SpanFilter;
    use crate::segment::SPANS_FILE;
    use crate::testsuite::{
        append_spans_of, corrupt_parquet_footer, corrupt_parquet_page, test_config, trace_id,
    };

    /// Three segments, one trace each (traces 1, 2, 3).
    async fn three_segments(dir: &Path) -> Arc<Storage> {
        let s = Storage::open(dir, test_config()).unwrap();
        s.replay().unwrap();
        for t in 1..=3u8 {
            append_spans_of(&s, t, 0, 3).await;
            s.flush(true).unwrap();
        }
        s
    }

    fn segment_of(s: &Storage, t: u8) -> Arc<Segment> {
        s.snapshot().segments.into_iter().find(|g| g.find(&trace_id(t)).is_some()).unwrap()
    }

    /// A page that does not decode: the lookup answers what the other
    /// places hold, the segment leaves the catalog for
    /// `segments/quarantine/<id>` with its record, is counted and listed,
    /// the lookup and searches that may need it are warned, other traces
    /// are whole and unwarned, and a restart keeps it quarantined.
    #[tokio::test]
    async fn a_damaged_page_quarantines_its_segment_and_warns_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let s = three_segments(dir.path()).await;
        let bad = segment_of(&s, 2);
        let id = bad.meta.id.clone();
        corrupt_parquet_page(&bad.dir().join(SPANS_FILE));
        drop(bad);
        assert!(s.damage_for_trace(&trace_id(2)).is_empty());

        assert!(s.get_trace(&trace_id(2)).unwrap().is_none(), "nothing else holds trace 2");
        let q = s.quarantined();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].id, id);
        assert!(q[0].reason.to_lowercase().contains("parquet"), "{}", q[0].reason);
        assert_eq!(s.metrics.segments_quarantined.get(), 1);
        assert_eq!(s.metrics.quarantined_segments.get(), 1);
        assert_eq!(s.metrics.segments.get(), 2);
        let qdir = dir.path().join("segments").join(QUARANTINE_DIR).join(&id);
        assert!(qdir.join(RECORD_FILE).exists() && qdir.join(SPANS_FILE).exists());
        assert!(!dir.path().join("segments").join(&id).exists());

        let w = s.damage_for_trace(&trace_id(2));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(&id), "{w:?}");
        assert!(s.damage_for_trace(&trace_id(1)).is_empty(), "its trace-ID index does not list trace 1");
        assert_eq!(s.damage_in_range(Some(0), None).len(), 1);
        assert!(s.damage_in_range(Some(10_000_000), None).is_empty(), "after its time range");
        for t in [1, 3] {
            assert_eq!(s.get_trace(&trace_id(t)).unwrap().unwrap().0.len(), 3, "trace {t} is whole");
        }
        let mut found = s.search_traces(&SpanFilter::default(), 10).unwrap();
        found.sort();
        assert_eq!(found, vec![trace_id(1), trace_id(3)]);

        drop(s);
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        assert_eq!(s.quarantined().len(), 1);
        assert_eq!(s.quarantined()[0].id, id);
        assert_eq!(s.metrics.quarantined_segments.get(), 1);
        assert_eq!(s.metrics.segments_quarantined.get(), 0, "this run quarantined nothing");
        assert_eq!(s.snapshot().segments.len(), 2);
        assert_eq!(s.damage_for_trace(&trace_id(2)).len(), 1);
        assert!(s.damage_for_trace(&trace_id(3)).is_empty());
        assert!(s.get_trace(&trace_id(2)).unwrap().is_none());
    }

    /// A footer that does not decode: the segment is quarantined at open,
    /// the rest loads, and every trace the index listed is warned.
    #[tokio::test]
    async fn a_damaged_footer_quarantines_its_segment_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = three_segments(dir.path()).await;
        let bad = segment_of(&s, 1);
        let (id, path) = (bad.meta.id.clone(), bad.dir().join(SPANS_FILE));
        drop((bad, s));
        corrupt_parquet_footer(&path);
        let s = Storage::open(dir.path(), test_config()).unwrap();
        s.replay().unwrap();
        assert_eq!(s.snapshot().segments.len(), 2);
        let q = s.quarantined();
        assert_eq!((q.len(), q[0].id.as_str()), (1, id.as_str()));
        assert!(q[0].reason.starts_with("cannot open"), "{}", q[0].reason);
        assert_eq!(s.metrics.segments_quarantined.get(), 1);
        assert_eq!(s.damage_for_trace(&trace_id(1)).len(), 1);
        assert!(s.damage_for_trace(&trace_id(2)).is_empty());
        assert_eq!(s.get_trace(&trace_id(2)).unwrap().unwrap().0.len(), 3);
    }

    /// Compaction that meets a damaged input quarantines it, fails this
    /// turn with the reason, and merges the rest at the next turn.
    #[tokio::test]
    async fn compaction_quarantines_a_damaged_input_and_goes_on_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config();
        cfg.compaction.min_inputs = 2;
        let s = Storage::open(dir.path(), cfg).unwrap();
        s.replay().unwrap();
        for t in 1..=3u8 {
            append_spans_of(&s, t, 0, 3).await;
            s.flush(true).unwrap();
        }
        let bad = segment_of(&s, 2);
        let id = bad.meta.id.clone();
        corrupt_parquet_page(&bad.dir().join(SPANS_FILE));
        drop(bad);
        let err = s.compact().unwrap_err();
        assert!(err.to_string().contains(&id) && err.to_string().contains("quarantined"), "{err}");
        assert_eq!(s.quarantined().len(), 1);
        let st = s.compact().unwrap();
        assert_eq!(st.inputs, 2);
        assert_eq!(s.snapshot().segments.len(), 1);
        for t in [1, 3] {
            assert_eq!(s.get_trace(&trace_id(t)).unwrap().unwrap().0.len(), 3);
        }
        assert_eq!(s.damage_for_trace(&trace_id(2)).len(), 1);
    }

    /// With object storage the damaged segment's objects stay in the
    /// store, marked: a node with an empty cache lists it as quarantined
    /// and never loads it.
    #[tokio::test]
    async fn with_object_storage_the_quarantine_is_recorded_in_the_store() {
        let store = tempfile::tempdir().unwrap();
        let cfg = || {
            let mut c = test_config();
            c.storage_url = Some(format!("file://{}", store.path().display()));
            c
        };
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), cfg()).unwrap();
        s.replay().unwrap();
        for t in 1..=2u8 {
            append_spans_of(&s, t, 0, 3).await;
            s.flush(true).unwrap();
        }
        let bad = segment_of(&s, 2);
        let id = bad.meta.id.clone();
        corrupt_parquet_page(&bad.dir().join(SPANS_FILE));
        drop(bad);
        assert!(s.get_trace(&trace_id(2)).unwrap().is_none());
        assert_eq!(s.quarantined().len(), 1);
        let objects = store.path().join("segments").join(&id);
        assert!(objects.join(RECORD_FILE).exists() && objects.join(SPANS_FILE).exists(), "kept, marked");
        drop(s);

        let fresh = tempfile::tempdir().unwrap();
        let s = Storage::open(fresh.path(), cfg()).unwrap();
        s.replay().unwrap();
        assert_eq!(s.snapshot().segments.len(), 1);
        let q = s.quarantined();
        assert_eq!((q.len(), q[0].id.as_str()), (1, id.as_str()));
        assert!(q[0].reason.to_lowercase().contains("parquet"), "{}", q[0].reason);
        assert_eq!(s.damage_for_trace(&trace_id(2)).len(), 1);
        assert!(s.damage_for_trace(&trace_id(1)).is_empty(), "its trace-ID index came along");
        assert_eq!(s.get_trace(&trace_id(1)).unwrap().unwrap().0.len(), 3);
    }

    #[test]
    fn faults_that_may_pass_are_not_damage() {
        use std::io::{Error as IoError, ErrorKind};
        assert!(Error::Corrupt("x".into()).is_damage());
        assert!(Error::Io(IoError::from(ErrorKind::UnexpectedEof)).is_damage());
        assert!(!Error::Io(IoError::from(ErrorKind::PermissionDenied)).is_damage());
        assert!(!Error::Io(IoError::other("EMFILE")).is_damage());
        assert!(!Error::Overloaded(1).is_damage());
        let fetch =
            crate::Error::ObjectStore(object_store::Error::Generic { store: "S3", source: "timeout".into() });
        let wrapped = parquet::errors::ParquetError::External(Box::new(fetch));
        assert!(!Error::Arrow(arrow_schema::ArrowError::ParquetError(wrapped.to_string())).is_damage());
        assert!(!Error::Parquet(wrapped).is_damage());
    }
}
