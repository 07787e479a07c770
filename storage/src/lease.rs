//! The single-compactor lease: one small object in the bucket, written only
//! with conditional puts, names the one node allowed to compact and apply
//! retention across every node's prefix. The object store's conditional
//! put is the only coordination (issue 14: nothing home-made decides
//! consensus); the rules below only decide when a node *tries* a write, and
//! the store refuses every write but one.
//!
//! # The object
//! `<shared prefix>/compactor.lease` ([`lease_path`]), JSON ([`LeaseRecord`]):
//! the holder's node ID, when it acquired and last renewed the lease (Unix
//! ms, by the holder's clock), the lease duration, an epoch (raised by one
//! at every acquisition, kept by renewals) and a write ID (a ULID, new for
//! every write, so no two writes have the same bytes and an ETag never
//! comes back: a compare-and-swap on the ETag has no ABA).
//!
//! # The rules
//! - **Acquire** ([`Lease::try_acquire`]): read the object with its ETag.
//!   Absent: create it with `PutMode::Create` (S3 `If-None-Match: *`).
//!   Expired: replace it with `PutMode::Update` on the ETag read (S3
//!   `If-Match`), epoch + 1. Held by a live holder (this node ID included:
//!   node IDs are unique, so a live lease under our ID is a previous run
//!   of this node, which may still be acting): leave it. Of several nodes
//!   trying at once, the store lets exactly one write succeed; the others
//!   get `AlreadyExists` / `Precondition` and go on waiting.
//! - **Expiry**, judged by the reader: `now > renewed_unix_ms + duration_ms`,
//!   both from the object (the holder's duration, so nodes configured
//!   differently still agree), `now` by the reader's wall clock.
//! - **Renew** ([`Lease::renew`]) every `duration / 3`: `PutMode::Update`
//!   on the ETag of the holder's last write. A refusal means another node
//!   wrote the object: [`LeaseError::Lost`], and the holder stops acting at
//!   once.
//! - **The holder's own deadline** ([`Held::valid_until`]): a holder acts
//!   only until `t + duration − duration / 3`, `t` the *local monotonic*
//!   instant just before its last successful write was sent. The margin
//!   (`duration / 3`, 10 s at the default 30 s) covers the clock skew
//!   between nodes (a waiter whose clock runs ahead by `s` takes over `s`
//!   early in real time) plus the latency of the holder's last delete
//!   request: correct while skew + that latency stay under the margin (NTP
//!   keeps skew to milliseconds). Two renewals may fail (transient store
//!   errors) before the deadline passes.
//! - **Release** ([`Lease::release`]): best effort, an `Update` on the ETag
//!   writing a record that is already expired, so a waiter takes over at its
//!   next poll instead of after `duration`.
//!
//! # Durability
//! A write is durable and visible to every reader when `put_opts` returns
//! `Ok` (S3 is strongly read-after-write consistent since December 2020).
//! A write whose answer was lost (a timeout after the store applied it)
//! comes back as a refusal on retry: the record is read again and, when it
//! carries our write ID, the write counts as ours.
//!
//! # How a compactor uses it
//! Run a [`LeaseKeeper`]; compact only while [`LeaseKeeper::held`] is
//! `true`, and check it again immediately before each deletion of inputs
//! (deletion is the only harmful act of a deposed holder: a duplicate
//! output is wasted work, a lost input is lost data). Never delete inputs
//! before the output is visible in the catalog (committed in the store).
//! Record [`LeaseKeeper::epoch`] in what a compaction writes (e.g. the
//! output's `meta.json`), so that outputs of a deposed holder can be
//! recognised: when two committed outputs replace overlapping inputs, the
//! one of the higher epoch wins and the other is removed.
//!
//! # Which stores
//! Conditional create *and* update are needed: S3 (AWS since 2024, MinIO,
//! R2, moto) and `InMemory` have them; `LocalFileSystem` (`file://`)
//! has no conditional update, so the compact role needs object storage of
//! the first kind. See [`s3_options`] for the S3 setting and
//! [`verify_conditional_put`] for a start-up check that the store really
//! refuses a second create.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Name of the lease object under the bucket's shared prefix.
pub const LEASE_FILE: &str = "compactor.lease";

/// The lease object of the storage prefix `prefix` (the prefix of the
/// storage URL shared by every node, not a node's own prefix):
/// `<prefix>/compactor.lease`.
pub fn lease_path(prefix: &str) -> ObjPath {
    let p = ObjPath::from(prefix.trim_matches('/'));
    p.join(LEASE_FILE)
}

/// The `object_store` S3 options the lease needs, as `(key, value)` pairs
/// for `AmazonS3Builder::with_config` (the keys `storage_options` takes).
///
/// `aws_conditional_put = etag` (`S3ConditionalPut::ETagMatch`): `PutMode::Create`
/// sends `If-None-Match: *` and `PutMode::Update` sends `If-Match: <etag>`,
/// which AWS S3 supports on PutObject since August / November 2024, as do
/// MinIO, Cloudflare R2 and moto. It is already the default in
/// `object_store` 0.14; setting it explicitly keeps an `AWS_CONDITIONAL_PUT=disabled`
/// in the environment (read by `AmazonS3Builder::from_env`) from turning
/// the lease off silently. No other setting is needed (no DynamoDB lock
/// table, no `aws_copy_if_not_exists`).
pub fn s3_options() -> [(&'static str, &'static str); 1] {
    [("aws_conditional_put", "etag")]
}

/// Lease settings. Keys `compaction.lease_duration` and
/// `compaction.lease_retry_interval` in the config file
/// (`docs/configuration.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// How long a lease lives without renewal: a dead compactor is replaced
    /// after at most this long; the holder renews every third of it and
    /// stops acting after two thirds without a successful renewal.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// How often a waiting compactor reads the lease to see whether it
    /// expired (also the retry delay after a store error while acquiring).
    #[serde(with = "humantime_serde")]
    pub lease_retry_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { lease_duration: Duration::from_secs(30), lease_retry_interval: Duration::from_secs(5) }
    }
}

/// The content of the lease object (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Node ID of the holder.
    pub holder: String,
    /// When the holder acquired the lease (Unix ms, holder's clock).
    pub acquired_unix_ms: u64,
    /// When the holder last wrote the lease (Unix ms, holder's clock);
    /// 0 once released.
    pub renewed_unix_ms: u64,
    /// The lease duration, in ms, the holder renews within.
    pub duration_ms: u64,
    /// Raised by one at every acquisition (1 for the first), kept by
    /// renewals: identifies one tenure.
    pub epoch: u64,
    /// A ULID new for every write: makes every write's bytes (and so its
    /// ETag) unique, and lets a writer recognise its own write.
    pub write_id: String,
}

impl LeaseRecord {
    /// Whether the lease is expired at `now_ms` (Unix ms, reader's clock).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        now_ms > self.renewed_unix_ms.saturating_add(self.duration_ms)
    }
}

/// Errors of the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another node wrote the lease object since our last write: we no
    /// longer hold it and must stop acting at once.
    #[error("compactor lease lost: {0}")]
    Lost(String),
    /// The lease object does not decode.
    #[error("compactor lease object is damaged: {0}")]
    Corrupt(String),
    /// An object-store error (network, permissions, a store without
    /// conditional puts: `NotImplemented`).
    #[error("compactor lease: {0}")]
    Store(#[from] object_store::Error),
}

/// Result of lease operations.
pub type LeaseResult<T> = std::result::Result<T, LeaseError>;

/// Wall-clock source, Unix ms; injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0))
}

/// Proof of holding the lease: the record last written and its version.
#[derive(Debug, Clone)]
pub struct Held {
    /// The record as written by this node.
    pub record: LeaseRecord,
    version: UpdateVersion,
    /// Local monotonic instant after which this node must not act on the
    /// lease unless renewed: the send time of the write + duration −
    /// duration / 3 (see the module doc).
    pub valid_until: Instant,
}

impl Held {
    /// The tenure's epoch, to record in what a compaction writes.
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// Whether the holder may still act (before [`Held::valid_until`]).
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

/// The lease of one node on one lease object.
#[derive(Clone)]
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    node_id: String,
    duration: Duration,
    clock: Clock,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("path", &self.path)
            .field("node_id", &self.node_id)
            .field("duration", &self.duration)
            .finish()
    }
}

enum Outcome {
    Written(UpdateVersion),
    Refused,
}

impl Lease {
    /// A lease on the object `path` of `store` for node `node_id`, held
    /// `duration` per renewal. Nothing is read or written yet.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: ObjPath,
        node_id: impl Into<String>,
        duration: Duration,
    ) -> Lease {
        Lease { store, path, node_id: node_id.into(), duration, clock: system_clock() }
    }

    /// Replaces the wall clock (Unix ms) used for the times written and
    /// for judging expiry; for tests.
    pub fn with_clock(mut self, clock: Clock) -> Lease {
        self.clock = clock;
        self
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The lease duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The holder's safety margin: a third of the duration.
    fn margin(&self) -> Duration {
        self.duration / 3
    }

    /// The current record and its version, `None` when there is no lease
    /// object. For status pages as well as the rules here.
    ///
    /// # Errors
    /// [`LeaseError::Store`], [`LeaseError::Corrupt`].
    pub async fn read(&self) -> LeaseResult<Option<(LeaseRecord, UpdateVersion)>> {
        let got = match self.store.get(&self.path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
        let bytes = got.bytes().await?;
        let record: LeaseRecord =
            serde_json::from_slice(&bytes).map_err(|e| LeaseError::Corrupt(format!("{}: {e}", self.path)))?;
        Ok(Some((record, version)))
    }

    fn record(&self, acquired_unix_ms: u64, now_ms: u64, epoch: u64) -> LeaseRecord {
        LeaseRecord {
            holder: self.node_id.clone(),
            acquired_unix_ms,
            renewed_unix_ms: now_ms,
            duration_ms: self.duration.as_millis() as u64,
            epoch,
            write_id: ulid::Ulid::new().to_string(),
        }
    }

    /// One conditional write. A refusal is re-checked: a write of ours
    /// whose answer was lost (and whose retry was refused) is a success.
    async fn write(&self, record: &LeaseRecord, mode: PutMode) -> LeaseResult<Outcome> {
        let body = serde_json::to_vec(record).map_err(|e| LeaseError::Corrupt(e.to_string()))?;
        let opts = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&self.path, PutPayload::from(body), opts).await {
            Ok(r) => Ok(Outcome::Written(UpdateVersion { e_tag: r.e_tag, version: r.version })),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                match self.read().await? {
                    Some((now, v)) if now.write_id == record.write_id => Ok(Outcome::Written(v)),
                    _ => Ok(Outcome::Refused),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn held(&self, record: LeaseRecord, version: UpdateVersion, sent: Instant) -> Held {
        let valid_until = sent + self.duration.saturating_sub(self.margin());
        Held { record, version, valid_until }
    }

    /// Tries to take the lease: `Some` when this node now holds it (it was
    /// absent, or expired and we replaced it), `None` when a live holder
    /// has it or another node won the race for it.
    ///
    /// # Errors
    /// [`LeaseError::Store`] (nothing was acquired, try again later),
    /// [`LeaseError::Corrupt`].
    pub async fn try_acquire(&self) -> LeaseResult<Option<Held>> {
        let current = self.read().await?;
        let sent = Instant::now();
        let now = (self.clock)();
        let (record, mode) = match current {
            None => (self.record(now, now, 1), PutMode::Create),
            Some((old, version)) if old.expired_at(now) => {
                (self.record(now, now, old.epoch + 1), PutMode::Update(version))
            }
            Some(_) => return Ok(None),
        };
        match self.write(&record, mode).await? {
            Outcome::Written(v) => Ok(Some(self.held(record, v, sent))),
            Outcome::Refused => Ok(None),
        }
    }

    /// Renews the lease: a new `renewed_unix_ms`, written only if the
    /// object is still our last write. Renew every `duration / 3`.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when another node wrote the object (or it was
    /// deleted): stop acting at once. [`LeaseError::Store`]: the lease may
    /// still be ours; retry until [`Held::valid_until`], then stop acting.
    pub async fn renew(&self, held: &Held) -> LeaseResult<Held> {
        let sent = Instant::now();
        let now = (self.clock)();
        let record = self.record(held.record.acquired_unix_ms, now, held.record.epoch);
        match self.write(&record, PutMode::Update(held.version.clone())).await? {
            Outcome::Written(v) => Ok(self.held(record, v, sent)),
            Outcome::Refused => Err(LeaseError::Lost(format!(
                "{} was written by another node since epoch {} of {}",
                self.path, held.record.epoch, self.node_id
            ))),
        }
    }

    /// Gives the lease up (best effort): writes an already expired record
    /// on our ETag, so a waiter takes over at its next poll. A failure
    /// (the lease was lost meanwhile, a store error) is ignored: the lease
    /// then expires by itself. Stop acting *before* calling this.
    pub async fn release(&self, held: Held) {
        let mut record = self.record(held.record.acquired_unix_ms, 0, held.record.epoch);
        record.renewed_unix_ms = 0;
        record.duration_ms = 0;
        if let Err(e) = self.write(&record, PutMode::Update(held.version)).await {
            tracing::warn!(error = %e, "releasing the compactor lease failed; it expires by itself");
        }
    }
}

/// Checks that `store` really refuses a second conditional create of the
/// object `probe` (which must not be in use; it is deleted afterwards):
/// a store that ignores `If-None-Match` would let two compactors hold the
/// lease. Run it once at the start of the compact role.
///
/// # Errors
/// [`LeaseError::Store`]; `NotImplemented` when the store has no
/// conditional put (e.g. `aws_conditional_put = disabled`, `file://`
/// stores for `Update`); [`LeaseError::Corrupt`] when the second create
/// succeeded.
pub async fn verify_conditional_put(store: &dyn ObjectStore, probe: &ObjPath) -> LeaseResult<()> {
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let _ = store.delete(probe).await;
    let first = store.put_opts(probe, PutPayload::from_static(b"1"), create()).await?;
    let second = store.put_opts(probe, PutPayload::from_static(b"2"), create()).await;
    let stale = UpdateVersion { e_tag: Some("\"not-the-etag\"".into()), version: None };
    let update = store
        .put_opts(
            probe,
            PutPayload::from_static(b"3"),
            PutOptions { mode: PutMode::Update(stale), ..Default::default() },
        )
        .await;
    let good = store
        .put_opts(
            probe,
            PutPayload::from_static(b"4"),
            PutOptions { mode: PutMode::Update(first.into()), ..Default::default() },
        )
        .await;
    let _ = store.delete(probe).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
        Ok(_) => return Err(LeaseError::Corrupt("the store accepted a second conditional create".into())),
    }
    match update {
        Err(object_store::Error::Precondition { .. }) => {}
        Err(e) => return Err(e.into()),
        Ok(_) => return Err(LeaseError::Corrupt("the store accepted an update on a stale ETag".into())),
    }
    good?;
    Ok(())
}

/// A background task that acquires the lease (polling every
/// `retry_interval` while another node holds it), renews it every
/// `duration / 3`, and publishes whether this node holds it.
///
/// On loss (a refused renewal, or [`Held::valid_until`] passing without a
/// successful renewal) `held` turns `false` before anything else happens,
/// then the task goes back to waiting. Dropping the keeper stops the task
/// without releasing (the lease expires); [`LeaseKeeper::shutdown`]
/// releases it.
#[derive(Debug)]
pub struct LeaseKeeper {
    held: watch::Receiver<bool>,
    /// [`Held::valid_until`] of the tenure in progress: [`LeaseKeeper::is_held`]
    /// checks it itself, so a task that runs late (a busy runtime) cannot
    /// leave `held` true past the deadline.
    valid_until: Arc<parking_lot::Mutex<Option<Instant>>>,
    epoch: watch::Receiver<Option<u64>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts the task on the current tokio runtime.
    pub fn spawn(lease: Lease, retry_interval: Duration) -> LeaseKeeper {
        let (held_tx, held) = watch::channel(false);
        let (epoch_tx, epoch) = watch::channel(None);
        let (stop, stop_rx) = oneshot::channel();
        let valid_until = Arc::new(parking_lot::Mutex::new(None));
        let task = tokio::spawn(keep(lease, retry_interval, held_tx, epoch_tx, valid_until.clone(), stop_rx));
        LeaseKeeper { held, valid_until, epoch, stop: Some(stop), task: Some(task) }
    }

    /// `true` while this node holds the lease and may compact.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Whether this node holds the lease now: `held` is `true` and the
    /// tenure's [`Held::valid_until`] has not passed. Check it right before
    /// every deletion.
    pub fn is_held(&self) -> bool {
        *self.held.borrow() && self.valid_until.lock().is_some_and(|t| Instant::now() < t)
    }

    /// The epoch of the current (or last) tenure of this node; set before
    /// `held` turns `true`.
    pub fn epoch(&self) -> watch::Receiver<Option<u64>> {
        self.epoch.clone()
    }

    /// Stops the task, releasing the lease if held (the `held` signal turns
    /// `false` first), and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn keep(
    lease: Lease,
    retry_interval: Duration,
    held_tx: watch::Sender<bool>,
    epoch_tx: watch::Sender<Option<u64>>,
    valid_until: Arc<parking_lot::Mutex<Option<Instant>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let renew_every = lease.duration() / 3;
    // After a failed renewal, retry sooner than a full third.
    let renew_retry = (lease.duration() / 10).max(Duration::from_millis(1));
    loop {
        // Waiting.
        let mut h = loop {
            match lease.try_acquire().await {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "compactor lease: acquiring failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry_interval) => {}
                _ = &mut stop => return,
            }
        };
        tracing::info!(node_id = lease.node_id(), epoch = h.epoch(), "compactor lease acquired");
        *valid_until.lock() = Some(h.valid_until);
        epoch_tx.send_replace(Some(h.epoch()));
        held_tx.send_replace(true);
        // Holding.
        let mut next = Instant::now() + renew_every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(h.valid_until)) => {}
                _ = &mut stop => {
                    held_tx.send_replace(false);
                    *valid_until.lock() = None;
                    lease.release(h).await;
                    return;
                }
            }
            if Instant::now() >= h.valid_until {
                held_tx.send_replace(false);
                *valid_until.lock() = None;
                tracing::warn!(
                    node_id = lease.node_id(),
                    epoch = h.epoch(),
                    "compactor lease lost: not renewed in time, stopped acting"
                );
                break;
            }
            // A renewal that does not answer before the deadline counts as
            // not renewed.
            match tokio::time::timeout_at(h.valid_until, lease.renew(&h)).await {
                Ok(Ok(n)) => {
                    h = n;
                    *valid_until.lock() = Some(h.valid_until);
                    next = Instant::now() + renew_every;
                }
                Ok(Err(LeaseError::Lost(why))) => {
                    held_tx.send_replace(false);
                    *valid_until.lock() = None;
                    tracing::warn!(node_id = lease.node_id(), epoch = h.epoch(), %why, "compactor lease lost");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "compactor lease: renewal failed, retrying");
                    next = Instant::now() + renew_retry;
                }
                Err(_) => next = Instant::now(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicU64, Ordering};

    const D: Duration = Duration::from_secs(30);

    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn new() -> (FakeClock, Clock) {
            let t = Arc::new(AtomicU64::new(1_000_000));
            let t2 = t.clone();
            (FakeClock(t), Arc::new(move || t2.load(Ordering::SeqCst)))
        }
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        }
    }

    fn store() -> Arc<dyn ObjectStore> {
        Arc::new(InMemory::new())
    }

    fn lease(s: &Arc<dyn ObjectStore>, node: &str, clock: &Clock) -> Lease {
        Lease::new(s.clone(), lease_path("shared"), node, D).with_clock(clock.clone())
    }

    #[test]
    fn path_and_config() {
        assert_eq!(lease_path("/a/b/").as_ref(), "a/b/compactor.lease");
        assert_eq!(lease_path("").as_ref(), "compactor.lease");
        let c: LeaseConfig = serde_json::from_str(r#"{"lease_duration":"10s"}"#).unwrap();
        assert_eq!(c.lease_duration, Duration::from_secs(10));
        assert_eq!(c.lease_retry_interval, Duration::from_secs(5));
        assert!(serde_json::from_str::<LeaseConfig>(r#"{"lease_duraton":"10s"}"#).is_err());
        assert_eq!(s3_options(), [("aws_conditional_put", "etag")]);
        // The key and value parse as the S3 builder's.
        let key: object_store::aws::AmazonS3ConfigKey = s3_options()[0].0.parse().unwrap();
        let b = object_store::aws::AmazonS3Builder::new().with_config(key, s3_options()[0].1);
        assert_eq!(b.get_config_value(&key).as_deref(), Some("etag"));
    }

    #[tokio::test]
    async fn many_concurrent_acquirers_exactly_one_wins() {
        for round in 0..20 {
            let s = store();
            let (_fc, clock) = FakeClock::new();
            let tries: Vec<_> = (0..16)
                .map(|i| {
                    let l = lease(&s, &format!("node-{i}"), &clock);
                    tokio::spawn(async move { l.try_acquire().await.unwrap().map(|h| (i, h)) })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tries {
                winners.extend(t.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}");
            let (i, h) = &winners[0];
            let (rec, _) = lease(&s, "x", &clock).read().await.unwrap().unwrap();
            assert_eq!(rec.holder, format!("node-{i}"));
            assert_eq!(h.epoch(), 1);
        }
    }

    #[tokio::test]
    async fn renew_keeps_it_expiry_hands_over_old_holder_loses() {
        let s = store();
        let (fc, clock) = FakeClock::new();
        let a = lease(&s, "a", &clock);
        let b = lease(&s, "b", &clock);
        let ha = a.try_acquire().await.unwrap().expect("a acquires");
        assert!(b.try_acquire().await.unwrap().is_none(), "live lease: b waits");
        assert!(
            a.try_acquire().await.unwrap().is_none(),
            "a live lease is not taken again, not even by its node"
        );

        // Renewals keep it past the first duration.
        fc.advance(D / 2);
        let ha = a.renew(&ha).await.unwrap();
        fc.advance(D / 2 + Duration::from_millis(1));
        assert!(b.try_acquire().await.unwrap().is_none(), "renewed: still live");
        let ha = a.renew(&ha).await.unwrap();
        assert_eq!(ha.epoch(), 1);

        // Exactly at the expiry it is still live; one ms later b takes over.
        fc.advance(D);
        assert!(b.try_acquire().await.unwrap().is_none());
        fc.advance(Duration::from_millis(1));
        let hb = b.try_acquire().await.unwrap().expect("expired: b takes over");
        assert_eq!(hb.epoch(), 2);
        match a.renew(&ha).await {
            Err(LeaseError::Lost(_)) => {}
            other => panic!("old holder must lose, got {other:?}"),
        }
        // b's lease is intact after a's refused write.
        let hb = b.renew(&hb).await.unwrap();
        assert_eq!(lease(&s, "x", &clock).read().await.unwrap().unwrap().0.holder, "b");
        // A stale release of a does nothing.
        a.release(ha).await;
        assert!(a.try_acquire().await.unwrap().is_none());
        assert!(b.renew(&hb).await.is_ok());
    }

    #[tokio::test]
    async fn release_hands_over_at_once() {
        let s = store();
        let (_fc, clock) = FakeClock::new();
        let a = lease(&s, "a", &clock);
        let b = lease(&s, "b", &clock);
        let ha = a.try_acquire().await.unwrap().unwrap();
        assert!(b.try_acquire().await.unwrap().is_none());
        let ha2 = ha.clone();
        a.release(ha).await;
        let hb = b.try_acquire().await.unwrap().expect("released: b takes it without waiting");
        assert_eq!(hb.epoch(), 2);
        assert!(matches!(a.renew(&ha2).await, Err(LeaseError::Lost(_))));
    }

    #[tokio::test]
    async fn deleted_object_is_a_loss_and_corrupt_object_an_error() {
        let s = store();
        let (_fc, clock) = FakeClock::new();
        let a = lease(&s, "a", &clock);
        let ha = a.try_acquire().await.unwrap().unwrap();
        s.delete(&lease_path("shared")).await.unwrap();
        assert!(matches!(a.renew(&ha).await, Err(LeaseError::Lost(_))));
        s.put(&lease_path("shared"), PutPayload::from_static(b"not json")).await.unwrap();
        assert!(matches!(a.try_acquire().await, Err(LeaseError::Corrupt(_))));
    }

    #[tokio::test]
    async fn lost_answer_of_own_write_counts_as_written() {
        let s = store();
        let (_fc, clock) = FakeClock::new();
        let a = lease(&s, "a", &clock);
        let ha = a.try_acquire().await.unwrap().unwrap();
        // The store applied the renewal but its answer was lost: the same
        // record written again on the old ETag is refused by the store and
        // recognised by its write ID.
        let rec = a.record(ha.record.acquired_unix_ms, (clock)(), 1);
        assert!(matches!(
            a.write(&rec, PutMode::Update(ha.version.clone())).await.unwrap(),
            Outcome::Written(_)
        ));
        assert!(matches!(
            a.write(&rec, PutMode::Update(ha.version.clone())).await.unwrap(),
            Outcome::Written(_)
        ));
        let other = a.record(ha.record.acquired_unix_ms, (clock)(), 1);
        assert!(matches!(a.write(&other, PutMode::Update(ha.version)).await.unwrap(), Outcome::Refused));
    }

    /// Random interleavings of acquire / renew / release / clock steps by
    /// three nodes: at no point do two nodes hold a valid (not refused,
    /// not expired by the store's record) lease of the same epoch, and
    /// epochs only grow.
    #[test]
    fn interleavings_never_two_holders() {
        use proptest::prelude::*;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ops = proptest::collection::vec((0usize..3, 0u8..4), 1..60);
        proptest!(ProptestConfig::with_cases(64), |(ops in ops)| {
            rt.block_on(async {
                let s = store();
                let (fc, clock) = FakeClock::new();
                let nodes: Vec<Lease> = (0..3).map(|i| lease(&s, &format!("n{i}"), &clock)).collect();
                let mut held: Vec<Option<Held>> = vec![None, None, None];
                let mut last_epoch = 0;
                for (n, op) in ops {
                    match op {
                        0 => if held[n].is_none() {
                            held[n] = nodes[n].try_acquire().await.unwrap();
                        },
                        1 => if let Some(h) = held[n].take() {
                            held[n] = nodes[n].renew(&h).await.ok();
                        },
                        2 => if let Some(h) = held[n].take() { nodes[n].release(h).await },
                        _ => fc.advance(D / 2),
                    }
                    // The holders whose record is the store's current one.
                    let cur = nodes[0].read().await.unwrap();
                    let owners: Vec<usize> = (0..3)
                        .filter(|&i| held[i].as_ref().is_some_and(|h| {
                            cur.as_ref().is_some_and(|(r, _)| r.write_id == h.record.write_id)
                        }))
                        .collect();
                    prop_assert!(owners.len() <= 1, "{owners:?}");
                    if let Some((r, _)) = &cur {
                        prop_assert!(r.epoch >= last_epoch);
                        last_epoch = r.epoch;
                    }
                    // Everyone else who thinks it holds is refused on renew.
                    for i in 0..3 {
                        if held[i].is_some() && !owners.contains(&i) {
                            let h = held[i].take().unwrap();
                            prop_assert!(matches!(nodes[i].renew(&h).await, Err(LeaseError::Lost(_))));
                        }
                    }
                }
                Ok(())
            })?;
        });
    }

    /// `is_held` is false once the tenure's deadline has passed, even
    /// while the keeper's task has not yet run to flip `held` (a busy
    /// runtime), so a deletion is never started after the deadline.
    #[tokio::test]
    async fn keeper_is_not_held_past_its_deadline() {
        let k = LeaseKeeper::spawn(Lease::new(store(), lease_path("d"), "a", D), Duration::from_millis(20));
        let mut held = k.held();
        tokio::time::timeout(Duration::from_secs(10), held.wait_for(|h| *h)).await.unwrap().unwrap();
        assert!(k.is_held());
        *k.valid_until.lock() = Some(Instant::now() - Duration::from_millis(1));
        assert!(*k.held().borrow(), "the task has not noticed yet");
        assert!(!k.is_held());
        k.shutdown().await;
    }

    #[tokio::test]
    async fn keeper_flips_on_acquire_loss_and_shutdown() {
        let s = store();
        // Long enough that a loaded machine still renews in time (the
        // holder's deadline is two thirds of it); handovers below go by
        // refusal and release, never by waiting for expiry.
        let d = Duration::from_secs(6);
        let retry = Duration::from_millis(20);
        let a = Lease::new(s.clone(), lease_path("k"), "a", d);
        let b = Lease::new(s.clone(), lease_path("k"), "b", d);
        let ka = LeaseKeeper::spawn(a, retry);
        let mut held_a = ka.held();
        tokio::time::timeout(Duration::from_secs(10), held_a.wait_for(|h| *h)).await.unwrap().unwrap();
        assert_eq!(*ka.epoch().borrow(), Some(1));
        let first = b.read().await.unwrap().unwrap().0;
        let kb = LeaseKeeper::spawn(b.clone(), retry);
        // a renews (same epoch, new time) and b, polling, does not get it.
        tokio::time::timeout(Duration::from_secs(20), async {
            while b.read().await.unwrap().unwrap().0.renewed_unix_ms == first.renewed_unix_ms {
                tokio::time::sleep(retry).await;
            }
        })
        .await
        .unwrap();
        let renewed = b.read().await.unwrap().unwrap().0;
        assert_eq!((renewed.holder.as_str(), renewed.epoch), ("a", 1));
        assert!(!kb.is_held());
        assert!(ka.is_held());

        // Someone else overwrites the lease (e.g. an operator or a split
        // brain): a's next renewal is refused and its signal turns false.
        let (rec, v) = b.read().await.unwrap().unwrap();
        let mut stolen = rec.clone();
        stolen.holder = "intruder".into();
        stolen.write_id = "x".into();
        stolen.epoch = 2;
        stolen.renewed_unix_ms = u64::MAX / 2;
        s.put_opts(
            &lease_path("k"),
            PutPayload::from(serde_json::to_vec(&stolen).unwrap()),
            PutOptions { mode: PutMode::Update(v), ..Default::default() },
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), held_a.wait_for(|h| !*h)).await.unwrap().unwrap();

        // Release by the intruder's ETag: b (or a) takes over at once.
        let (_, v) = b.read().await.unwrap().unwrap();
        stolen.renewed_unix_ms = 0;
        stolen.duration_ms = 0;
        s.put_opts(
            &lease_path("k"),
            PutPayload::from(serde_json::to_vec(&stolen).unwrap()),
            PutOptions { mode: PutMode::Update(v), ..Default::default() },
        )
        .await
        .unwrap();
        let mut hb = kb.held();
        let mut ha = ka.held();
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! { _ = hb.wait_for(|h| *h) => {}, _ = ha.wait_for(|h| *h) => {} }
        })
        .await
        .unwrap();
        let (winner, loser) = if kb.is_held() { (kb, ka) } else { (ka, kb) };
        assert!(!loser.is_held());
        assert_eq!(*winner.epoch().borrow(), Some(3));

        // Shutdown releases: the other takes over without waiting for expiry.
        let mut hl = loser.held();
        let mut hw = winner.held();
        winner.shutdown().await;
        assert!(!*hw.borrow_and_update());
        tokio::time::timeout(Duration::from_secs(10), hl.wait_for(|h| *h)).await.unwrap().unwrap();
        assert_eq!(*loser.epoch().borrow(), Some(4));
        loser.shutdown().await;
    }

    /// Against a real S3 API server (moto in server mode): the conditional
    /// create and update that `object_store` sends with
    /// [`s3_options`] really refuse the second writer, and the lease rules
    /// hold there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_conditional_puts_refuse_the_second_writer() {
        let moto = crate::testsuite::Moto::start();
        moto.create_bucket("lease-test");
        let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name("lease-test");
        for (k, v) in moto.options().iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(s3_options()) {
            b = b.with_config(k.parse().unwrap(), v);
        }
        let s: Arc<dyn ObjectStore> = Arc::new(b.build().unwrap());
        verify_conditional_put(s.as_ref(), &ObjPath::from("probe/conditional-put")).await.unwrap();

        let (fc, clock) = FakeClock::new();
        let a = lease(&s, "a", &clock);
        let bl = lease(&s, "b", &clock);
        let ha = a.try_acquire().await.unwrap().expect("a creates the lease");
        assert!(bl.try_acquire().await.unwrap().is_none(), "If-None-Match refused b");
        // b read the object, then a renewed: b's Update on the old ETag is refused.
        let (_, stale) = bl.read().await.unwrap().unwrap();
        let ha = a.renew(&ha).await.unwrap();
        let rec = bl.record(0, (clock)(), 2);
        assert!(matches!(bl.write(&rec, PutMode::Update(stale)).await.unwrap(), Outcome::Refused));
        fc.advance(D + Duration::from_millis(1));
        let hb = bl.try_acquire().await.unwrap().expect("expired: b takes over with If-Match");
        assert_eq!(hb.epoch(), 2);
        assert!(matches!(a.renew(&ha).await, Err(LeaseError::Lost(_))));
        let hb2 = hb.clone();
        bl.release(hb).await;
        assert!(a.try_acquire().await.unwrap().is_some(), "released: a takes over at once");
        assert!(matches!(bl.renew(&hb2).await, Err(LeaseError::Lost(_))));
        assert_eq!(a.read().await.unwrap().unwrap().0.epoch, 3);
    }
}
