//! Segments on a real S3 API server (moto in server mode, started here):
//! write, read from a cold cache, compaction and retention.

use super::*;
use crate::filter::{LogFilter, SpanFilter};
use crate::head::CutPolicy;
use crate::model::TraceId;
use crate::tests::{append, append_log, retention_config};
use crate::testsuite::Moto;

const BUCKET: &str = "skein-test";

fn s3_config(m: &Moto, prefix: &str) -> StorageConfig {
    let mut c = retention_config();
    c.storage_url = Some(format!("s3://{BUCKET}/{prefix}"));
    c.storage_options = m.options();
    c.compaction.min_inputs = 2;
    // No Parquet data cached: every read of rows, compaction's included,
    // goes to the store.
    c.cache_bytes = Some(0);
    c
}

fn committed(s: &Storage) -> Vec<String> {
    s.remote.as_ref().expect("object storage").list().unwrap().committed
}

fn spans_of(s: &Storage, t: u8) -> usize {
    s.get_trace(&TraceId([t; 16])).unwrap().map(|x| x.0.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_write_read_compact_retain() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let prefix = "round-trip";

    // Write: four flushes, four segments, all in the bucket.
    let dir1 = tempfile::tempdir().unwrap();
    let s = Storage::open(dir1.path(), s3_config(&moto, prefix)).unwrap();
    s.replay().unwrap();
    for t in 1..=4u8 {
        append(&s, t, 3).await;
        append_log(&s, t, &format!("payment declined for order {t}")).await;
        s.flush(true).unwrap();
    }
    let ids: Vec<String> = s.snapshot().segments.iter().map(|x| x.meta.id.clone()).collect();
    assert_eq!(committed(&s), ids);
    assert!(s.snapshot().segments.iter().all(|x| !x.parquet_is_local()), "cache_bytes = 0 keeps no rows");
    assert_eq!(spans_of(&s, 1), 3);
    assert!(s.metrics.remote_written_bytes.get() > 0);

    // Compaction: one segment replaces the four, in the bucket too.
    let stats = s.compact().unwrap();
    assert_eq!(stats.inputs, 4);
    assert_eq!(stats.spans, 12);
    let after = committed(&s);
    assert_eq!(after.len(), 1);
    assert_eq!(after, s.snapshot().segments.iter().map(|x| x.meta.id.clone()).collect::<Vec<_>>());
    drop(s);
    std::thread::sleep(Duration::from_millis(100));

    // Read: another node (a fresh data directory, nothing cached) sees
    // everything through the bucket; rows come from the store.
    let dir2 = tempfile::tempdir().unwrap();
    let s = Storage::open(dir2.path(), s3_config(&moto, prefix)).unwrap();
    s.replay().unwrap();
    let segs = s.snapshot().segments;
    assert_eq!(segs.len(), 1);
    assert!(!segs[0].parquet_is_local(), "Parquet data is read remotely, not downloaded at open");
    drop(segs);
    let requests = |s: &Storage| s.metrics.remote_requests.get();
    let before = requests(&s);
    let (spans, logs) = s.get_trace(&TraceId([2; 16])).unwrap().unwrap();
    assert_eq!((spans.len(), logs.len()), (3, 1));
    let first = requests(&s) - before;
    assert!(first > 0, "rows of a remote segment come from the store");
    let before = requests(&s);
    assert_eq!(spans_of(&s, 3), 3);
    assert_eq!(
        requests(&s) - before,
        first,
        "a second lookup reads only rows again: footers and indexes are cached"
    );
    assert!(first <= 2, "one request per Parquet file read ({first})");
    let mut found = s.search_traces(&SpanFilter::default(), 100).unwrap();
    found.sort();
    assert_eq!(found, (1..=4u8).map(|t| TraceId([t; 16])).collect::<Vec<_>>());
    let words =
        s.search_logs(&LogFilter { words: vec!["declined".into()], ..Default::default() }, 100).unwrap();
    assert_eq!(words.len(), 4);
    assert!(s.get_trace(&TraceId([9; 16])).unwrap().is_none());

    // Retention: a new segment, then a size limit that only it fits under.
    append(&s, 5, 3).await;
    s.flush(true).unwrap();
    let newest = s.snapshot().segments.iter().max_by_key(|x| x.meta.id.clone()).unwrap().clone();
    let limit = newest.meta.bytes;
    let newest_id = newest.meta.id.clone();
    drop(newest);
    drop(s);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = s3_config(&moto, prefix);
    c.retention_bytes = Some(limit);
    let s = Storage::open(dir2.path(), c).unwrap();
    s.replay().unwrap();
    assert_eq!(s.enforce_retention().unwrap(), 1);
    assert_eq!(committed(&s), vec![newest_id.clone()]);
    assert_eq!((spans_of(&s, 1), spans_of(&s, 5)), (0, 3));
    drop(s);
    std::thread::sleep(Duration::from_millis(100));

    // And a third node sees exactly what is left.
    let dir3 = tempfile::tempdir().unwrap();
    let s = Storage::open(dir3.path(), s3_config(&moto, prefix)).unwrap();
    s.replay().unwrap();
    assert_eq!((1..=5u8).map(|t| spans_of(&s, t)).collect::<Vec<_>>(), vec![0, 0, 0, 0, 3]);
}

/// A crash after a segment was written locally but before its upload
/// finished leaves a local directory the bucket does not hold, and objects
/// without `meta.json`: both are dropped at start, and the data comes back
/// from the WAL exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_upload_is_dropped_and_replayed() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut c = s3_config(&moto, "crash");
    c.wal.max_file_bytes = 64 << 20; // keep the WAL
    {
        let s = Storage::open(dir.path(), c.clone()).unwrap();
        s.replay().unwrap();
        append(&s, 1, 3).await;
        s.flush(true).unwrap();
        append(&s, 2, 4).await;
        // "Crash" while flushing trace 2: written locally, partly uploaded.
        let policy = CutPolicy { now_ms: 0, idle_ms: 0, max_age_ms: 0, target_bytes: 0, all: true };
        let traces = s.head().cut(policy);
        let (meta, _) =
            segment::write_segment(&s.segments_dir(), &s.cfg.segment, &traces, now_unix_nano()).unwrap();
        let r = s.remote.clone().unwrap();
        let idx = fs::read(s.segments_dir().join(&meta.id).join("traces.idx")).unwrap();
        r.put(&meta.id, "traces.idx", idx).unwrap();
        let listing = r.list().unwrap();
        assert_eq!((listing.committed.len(), listing.incomplete), (1, vec![meta.id.clone()]));
    }
    std::thread::sleep(Duration::from_millis(100));
    let s = Storage::open(dir.path(), c).unwrap();
    s.replay().unwrap();
    assert_eq!(s.snapshot().segments.len(), 1, "the half-written segment is gone");
    assert_eq!((spans_of(&s, 1), spans_of(&s, 2)), (3, 4));
    s.flush(true).unwrap();
    assert_eq!((spans_of(&s, 1), spans_of(&s, 2)), (3, 4));
    assert_eq!(committed(&s).len(), 2);
    assert!(s.remote.as_ref().unwrap().list().unwrap().incomplete.is_empty());
}
