//! Live tail: a bounded broadcast of the log records each storage appends,
//! for clients that follow new records as they arrive (the query side's
//! `GET /api/v1/tail/logs`, Loki's `/loki/api/v1/tail` in spirit).
//!
//! The collector and the query side never call each other: the collector
//! appends through [`Storage::append_logs`](crate::Storage::append_logs),
//! which publishes each acknowledged batch here, tagged with its tenant,
//! and the query side subscribes. The channel is a
//! [`tokio::sync::broadcast`] ring of `capacity` batches: a publisher never
//! waits, and a subscriber that falls more than `capacity` batches behind
//! loses the oldest ones. What it lost is counted exactly, in records of
//! its tenant: every batch carries its tenant's running record count
//! ([`TailBatch::first_seq`]), so a gap in that count is what was dropped
//! ([`TailEvent::Lagged`], `skein_tail_dropped_records_total`). Records are
//! copied for the tail only while someone subscribes.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, watch};

use crate::model::LogRecord;
use crate::tenant::TenantId;

/// Default ring size of the tail channel, in batches (one batch is one
/// ingest request's log records).
pub const DEFAULT_TAIL_CAPACITY: usize = 1024;

/// One appended batch of log records, as broadcast to tail subscribers.
#[derive(Debug)]
pub struct TailBatch {
    /// The tenant whose storage appended the batch.
    pub tenant: TenantId,
    /// How many records of this tenant were published before this batch
    /// (its running count), so a subscriber measures what it missed.
    pub first_seq: u64,
    /// The records, in the order they were appended; already durable.
    pub logs: Vec<LogRecord>,
}

/// What [`TailSubscription::recv`] hands out.
#[derive(Debug)]
pub enum TailEvent {
    /// The next batch of the subscriber's tenant.
    Records(Arc<TailBatch>),
    /// This many records of the subscriber's tenant were dropped because it
    /// fell behind by more than the channel's capacity; the batch after the
    /// gap comes with the next call.
    Lagged(u64),
    /// The tail was closed ([`LogTail::close`], at shutdown): no more
    /// records will come.
    Closed,
}

/// Refused subscription: `max_clients` tail clients are connected already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyTailClients(pub usize);

impl fmt::Display for TooManyTailClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} live tail clients are connected already (the limit)", self.0)
    }
}

impl std::error::Error for TooManyTailClients {}

/// The tail's counters.
#[derive(Debug, Clone, Default)]
struct TailMetrics {
    clients: Gauge,
    dropped: Counter,
    published: Counter,
}

/// The broadcast every tenant's storage publishes its appended log records
/// to; one per process ([`crate::tenant::Tenants::tail`]).
pub struct LogTail {
    tx: broadcast::Sender<Arc<TailBatch>>,
    /// Per tenant, records published so far; held while sending, so each
    /// tenant's batches enter the channel in `first_seq` order.
    seqs: Mutex<HashMap<TenantId, u64>>,
    clients: AtomicUsize,
    closed: watch::Sender<bool>,
    metrics: TailMetrics,
}

impl fmt::Debug for LogTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogTail").field("clients", &self.clients()).finish()
    }
}

impl LogTail {
    /// A tail whose channel holds `capacity` batches (at least 1): a
    /// subscriber may be that many batches behind before it loses any.
    pub fn new(capacity: usize) -> Arc<LogTail> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(LogTail {
            tx,
            seqs: Mutex::new(HashMap::new()),
            clients: AtomicUsize::new(0),
            closed: watch::channel(false).0,
            metrics: TailMetrics::default(),
        })
    }

    /// Registers `skein_tail_clients`, `skein_tail_published_records_total`
    /// and `skein_tail_dropped_records_total` in `r`.
    pub fn register(&self, r: &mut Registry) {
        let m = &self.metrics;
        r.register("skein_tail_clients", "Live tail subscribers connected", m.clients.clone());
        r.register(
            "skein_tail_published_records",
            "Log records published to live tail subscribers (only while one is connected)",
            m.published.clone(),
        );
        r.register(
            "skein_tail_dropped_records",
            "Log records live tail subscribers lost by falling behind (per subscriber)",
            m.dropped.clone(),
        );
    }

    /// Subscribers connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// Whether anyone subscribes: appends copy their records only then.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Follows `tenant`'s records from now on, unless `max_clients`
    /// subscriptions are open already.
    ///
    /// # Errors
    /// [`TooManyTailClients`] at the limit.
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: TenantId,
        max_clients: usize,
    ) -> Result<TailSubscription, TooManyTailClients> {
        let taken = self
            .clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max_clients).then_some(n + 1));
        if taken.is_err() {
            return Err(TooManyTailClients(max_clients));
        }
        self.metrics.clients.inc();
        // Under the lock no batch is published, so the receiver starts
        // exactly at `next_seq`.
        let seqs = self.seqs.lock();
        let rx = self.tx.subscribe();
        let next_seq = seqs.get(&tenant).copied().unwrap_or(0);
        drop(seqs);
        Ok(TailSubscription {
            tail: self.clone(),
            tenant,
            rx,
            next_seq,
            pending: None,
            closed: self.closed.subscribe(),
        })
    }

    /// The running count of `tenant`'s published records: the
    /// `first_seq` the next batch of the tenant will carry.
    pub fn next_seq(&self, tenant: &TenantId) -> u64 {
        self.seqs.lock().get(tenant).copied().unwrap_or(0)
    }

    /// Publishes `logs`, appended (durably) by `tenant`'s storage. Never
    /// waits: a full ring overwrites its oldest batch.
    pub fn publish(&self, tenant: &TenantId, logs: Vec<LogRecord>) {
        if logs.is_empty() {
            return;
        }
        let n = logs.len() as u64;
        let mut seqs = self.seqs.lock();
        let seq = seqs.entry(tenant.clone()).or_insert(0);
        let batch = Arc::new(TailBatch { tenant: tenant.clone(), first_seq: *seq, logs });
        *seq += n;
        // Err only when nobody listens, which is fine.
        if self.tx.send(batch).is_ok() {
            self.metrics.published.inc_by(n);
        }
    }

    /// Ends every subscription ([`TailEvent::Closed`]), so streaming
    /// responses finish and a draining server can close their connections.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// One client's subscription; counted in [`LogTail::clients`] until dropped.
#[derive(Debug)]
pub struct TailSubscription {
    tail: Arc<LogTail>,
    tenant: TenantId,
    rx: broadcast::Receiver<Arc<TailBatch>>,
    /// The tenant's running record count expected in the next batch.
    next_seq: u64,
    /// A batch that arrived after a gap, handed out after the gap's
    /// [`TailEvent::Lagged`].
    pending: Option<Arc<TailBatch>>,
    closed: watch::Receiver<bool>,
}

impl TailSubscription {
    /// The tenant this subscription follows.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The next batch of this subscription's tenant, a gap, or the end.
    /// Other tenants' batches are skipped here, so nobody sees another
    /// tenant's records.
    pub async fn recv(&mut self) -> TailEvent {
        if let Some(b) = self.pending.take() {
            return TailEvent::Records(b);
        }
        loop {
            if *self.closed.borrow() {
                return TailEvent::Closed;
            }
            let got = tokio::select! {
                _ = self.closed.changed() => continue,
                r = self.rx.recv() => r,
            };
            match got {
                Ok(b) if b.tenant != self.tenant => {}
                Ok(b) => {
                    let gap = b.first_seq.saturating_sub(self.next_seq);
                    self.next_seq = b.first_seq + b.logs.len() as u64;
                    if gap > 0 {
                        self.tail.metrics.dropped.inc_by(gap);
                        self.pending = Some(b);
                        return TailEvent::Lagged(gap);
                    }
                    return TailEvent::Records(b);
                }
                // The gap is measured on this tenant's next batch.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return TailEvent::Closed,
            }
        }
    }
}

impl Drop for TailSubscription {
    fn drop(&mut self) {
        self.tail.clients.fetch_sub(1, Ordering::SeqCst);
        self.tail.metrics.clients.dec();
    }
}

/// A storage's way to its process's tail: the shared cell the tail is put
/// in once ([`crate::tenant::Tenants::tail`]) and the storage's tenant.
#[derive(Debug, Clone)]
pub(crate) struct TailLink {
    pub(crate) cell: Arc<OnceLock<Arc<LogTail>>>,
    pub(crate) tenant: TenantId,
}

impl TailLink {
    /// The tail, when it exists and someone follows it.
    pub(crate) fn wanted(&self) -> Option<&Arc<LogTail>> {
        self.cell.get().filter(|t| t.wanted())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testsuite::log_of_trace;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn logs(n: usize) -> Vec<LogRecord> {
        (0..n).map(|i| log_of_trace(0, &format!("line {i}"))).collect()
    }

    async fn next(s: &mut TailSubscription) -> TailEvent {
        tokio::time::timeout(Duration::from_secs(5), s.recv()).await.expect("a tail event")
    }

    #[tokio::test]
    async fn test_appended_logs_reach_the_tail_tagged_with_their_tenant() {
        let d = tempfile::tempdir().unwrap();
        let ts = crate::tenant::Tenants::open(
            d.path(),
            crate::testsuite::test_config(),
            Default::default(),
            Default::default(),
        )
        .unwrap();
        ts.replay().unwrap();
        // Nobody follows yet: nothing is copied or published.
        ts.default_storage().append_logs(logs(1)).await.unwrap();
        let tail = ts.tail().clone();
        assert_eq!(tail.metrics.published.get(), 0);
        let mut b_sub = tail.subscribe(t("b"), 10).unwrap();
        let mut default_sub = tail.subscribe(TenantId::single(), 10).unwrap();
        ts.default_storage().append_logs(logs(1)).await.unwrap();
        let b = ts.get(&t("b")).unwrap();
        b.append_logs(logs(2)).await.unwrap();
        let TailEvent::Records(r) = next(&mut b_sub).await else { panic!() };
        assert_eq!((r.tenant.as_str(), r.logs.len()), ("b", 2));
        assert_eq!(r.logs[1].body, log_of_trace(0, "line 1").body);
        let TailEvent::Records(r) = next(&mut default_sub).await else { panic!() };
        assert_eq!((r.tenant.as_str(), r.logs.len()), (crate::tenant::DEFAULT_TENANT, 1));
    }

    #[tokio::test]
    async fn test_subscribers_get_only_their_tenants_records_in_order() {
        let tail = LogTail::new(16);
        assert!(!tail.wanted());
        let mut a = tail.subscribe(t("a"), 10).unwrap();
        let mut b = tail.subscribe(t("b"), 10).unwrap();
        assert!(tail.wanted());
        tail.publish(&t("a"), logs(2));
        tail.publish(&t("b"), logs(1));
        tail.publish(&t("a"), logs(3));
        let TailEvent::Records(r) = next(&mut a).await else { panic!() };
        assert_eq!((r.tenant.as_str(), r.first_seq, r.logs.len()), ("a", 0, 2));
        let TailEvent::Records(r) = next(&mut a).await else { panic!() };
        assert_eq!((r.first_seq, r.logs.len()), (2, 3));
        let TailEvent::Records(r) = next(&mut b).await else { panic!() };
        assert_eq!((r.tenant.as_str(), r.logs.len()), ("b", 1));
        // Nothing of "a" reaches "b".
        assert!(tokio::time::timeout(Duration::from_millis(50), b.recv()).await.is_err());
    }

    #[tokio::test]
    async fn test_a_slow_subscriber_loses_the_oldest_batches_and_is_told_how_many_records() {
        let tail = LogTail::new(2);
        let mut slow = tail.subscribe(t("a"), 10).unwrap();
        for _ in 0..5 {
            tail.publish(&t("a"), logs(3));
        }
        // The ring keeps the last 2 batches: 3 batches of 3 are gone.
        let TailEvent::Lagged(n) = next(&mut slow).await else { panic!() };
        assert_eq!(n, 9);
        let TailEvent::Records(r) = next(&mut slow).await else { panic!() };
        assert_eq!(r.first_seq, 9);
        let TailEvent::Records(r) = next(&mut slow).await else { panic!() };
        assert_eq!(r.first_seq, 12);
        assert_eq!(tail.metrics.dropped.get(), 9);
        // Publishing never waited for it, and the ring stays at its bound.
        assert_eq!(tail.tx.len(), 0);
        for _ in 0..100 {
            tail.publish(&t("a"), logs(1));
        }
        assert_eq!(tail.tx.len(), 2);
    }

    #[tokio::test]
    async fn test_other_tenants_traffic_is_not_counted_as_this_ones_loss() {
        let tail = LogTail::new(2);
        let mut a = tail.subscribe(t("a"), 10).unwrap();
        tail.publish(&t("a"), logs(1));
        for _ in 0..10 {
            tail.publish(&t("b"), logs(5));
        }
        tail.publish(&t("a"), logs(1));
        // "a"'s first batch was overwritten by "b"'s: one record of "a" lost.
        let TailEvent::Lagged(n) = next(&mut a).await else { panic!() };
        assert_eq!(n, 1);
        let TailEvent::Records(r) = next(&mut a).await else { panic!() };
        assert_eq!(r.first_seq, 1);
    }

    #[tokio::test]
    async fn test_clients_are_bounded_and_released_on_drop_and_close_ends_them() {
        let tail = LogTail::new(4);
        // Records published before subscribing are not this client's loss.
        tail.publish(&t("a"), logs(4));
        let mut one = tail.subscribe(t("a"), 2).unwrap();
        let two = tail.subscribe(t("a"), 2).unwrap();
        assert_eq!(tail.subscribe(t("a"), 2).unwrap_err(), TooManyTailClients(2));
        assert_eq!(tail.clients(), 2);
        drop(two);
        assert_eq!(tail.clients(), 1);
        tail.publish(&t("a"), logs(1));
        let TailEvent::Records(r) = next(&mut one).await else { panic!() };
        assert_eq!(r.first_seq, 4);
        tail.close();
        assert!(matches!(next(&mut one).await, TailEvent::Closed));
        drop(one);
        assert_eq!(tail.clients(), 0);
        assert!(!tail.wanted());
    }
}
