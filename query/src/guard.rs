//! Guard rails shared by every query of a server: the concurrency limit
//! (`query.max_concurrent`, waiting at most `query.queue_timeout` for a
//! slot) and the counters `/metrics` shows of queries refused by it and
//! cut by the deadline.
//!
//! Trace lookups by ID have a pool of their own: opening one trace from a
//! search result must not queue behind the broad searches that fill the
//! other pool, and a lookup reads only the segments holding the trace, so
//! its slots come free quickly.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::QueryConfig;

/// Which slots a query takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Searches and listings: trace and log search, tags, services,
    /// operations, dependencies, RED, histograms.
    Search,
    /// Trace lookups by ID.
    Trace,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Search => "search",
            Pool::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: &'static str,
}

/// The query counters of `/metrics`, per pool (`search`, `trace`), every
/// series present from the start at 0.
#[derive(Debug, Clone, Default)]
pub struct QueryMetrics {
    refused: Family<PoolLabel, Counter>,
    deadline: Family<PoolLabel, Counter>,
    running: Family<PoolLabel, Gauge>,
}

impl QueryMetrics {
    /// Registers `skein_queries_refused_total` (refused with 429 by the
    /// concurrency limit), `skein_queries_deadline_exceeded_total` (cut by
    /// `query.timeout`, answered 504) and `skein_queries_running` (holding
    /// a slot now, including work cut by the deadline that has not
    /// stopped yet).
    pub fn register(&self, registry: &mut Registry) {
        for p in [Pool::Search, Pool::Trace] {
            let l = PoolLabel { pool: p.label() };
            drop(self.refused.get_or_create(&l));
            drop(self.deadline.get_or_create(&l));
            drop(self.running.get_or_create(&l));
        }
        registry.register(
            "skein_queries_refused",
            "Queries refused with 429 because query.max_concurrent queries were running for query.queue_timeout",
            self.refused.clone(),
        );
        registry.register(
            "skein_queries_deadline_exceeded",
            "Queries cut by query.timeout (answered 504, their work cancelled)",
            self.deadline.clone(),
        );
        registry.register(
            "skein_queries_running",
            "Queries holding a concurrency slot (running, or stopping after their deadline)",
            self.running.clone(),
        );
    }

    /// Counts a query of `pool` cut by its deadline.
    pub(crate) fn deadline_exceeded(&self, pool: Pool) {
        self.deadline.get_or_create(&PoolLabel { pool: pool.label() }).inc();
    }

    /// Queries of `pool` refused so far.
    pub fn refused(&self, pool: Pool) -> u64 {
        self.refused.get_or_create(&PoolLabel { pool: pool.label() }).get()
    }

    /// Queries of `pool` cut by the deadline so far.
    pub fn deadlines(&self, pool: Pool) -> u64 {
        self.deadline.get_or_create(&PoolLabel { pool: pool.label() }).get()
    }

    /// Queries of `pool` holding a slot now.
    pub fn running(&self, pool: Pool) -> i64 {
        self.running.get_or_create(&PoolLabel { pool: pool.label() }).get()
    }
}

/// The concurrency limit and query counters of one server; cheap to clone
/// (clones share the slots).
#[derive(Debug, Clone)]
pub struct Guards(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    search: Arc<Semaphore>,
    trace: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
    metrics: QueryMetrics,
}

/// A query's slot: held by the blocking work itself, so a query cut by
/// the deadline keeps its slot until its work has really stopped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

impl Guards {
    /// Slots for `cfg.max_concurrent` queries per pool; counters not
    /// registered anywhere (see [`QueryMetrics::register`]).
    pub fn new(cfg: &QueryConfig) -> Guards {
        Guards::with_metrics(cfg, QueryMetrics::default())
    }

    /// As [`Guards::new`], counting in `metrics`.
    pub fn with_metrics(cfg: &QueryConfig, metrics: QueryMetrics) -> Guards {
        let n = cfg.max_concurrent.max(1);
        Guards(Arc::new(Inner {
            search: Arc::new(Semaphore::new(n)),
            trace: Arc::new(Semaphore::new(n)),
            max: n,
            queue_timeout: cfg.queue_timeout,
            metrics,
        }))
    }

    /// The counters.
    pub fn metrics(&self) -> &QueryMetrics {
        &self.0.metrics
    }

    /// A slot of `pool`, waiting for one up to `query.queue_timeout`.
    ///
    /// # Errors
    /// [`Error::TooBusy`] (429 with `Retry-After`) when none came free.
    pub async fn admit(&self, pool: Pool) -> Result<Slot> {
        let sem = match pool {
            Pool::Search => &self.0.search,
            Pool::Trace => &self.0.trace,
        };
        let label = PoolLabel { pool: pool.label() };
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => tokio::time::timeout(self.0.queue_timeout, sem.clone().acquire_owned())
                .await
                .ok()
                .and_then(|p| p.ok()),
        };
        let Some(permit) = permit else {
            self.0.metrics.refused.get_or_create(&label).inc();
            return Err(Error::TooBusy(format!(
                "too many queries at once: {} {} queries are running and none finished within {:?} \
                 (query.max_concurrent, query.queue_timeout); retry later",
                self.0.max,
                pool.label(),
                self.0.queue_timeout
            )));
        };
        let running = self.0.metrics.running.get_or_create(&label).clone();
        running.inc();
        Ok(Slot { _permit: permit, running })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_refuses_after_the_queue_timeout_and_frees_slots_on_drop() {
        let cfg =
            QueryConfig { max_concurrent: 2, queue_timeout: Duration::from_millis(10), ..Default::default() };
        let g = Guards::new(&cfg);
        let a = g.admit(Pool::Search).await.unwrap();
        let _b = g.admit(Pool::Search).await.unwrap();
        assert_eq!(g.metrics().running(Pool::Search), 2);
        let r = g.admit(Pool::Search).await;
        assert!(matches!(&r, Err(Error::TooBusy(m)) if m.contains("query.max_concurrent")), "{r:?}");
        assert_eq!(g.metrics().refused(Pool::Search), 1);
        // The trace pool is separate.
        let _t = g.admit(Pool::Trace).await.unwrap();
        drop(a);
        assert_eq!(g.metrics().running(Pool::Search), 1);
        let _c = g.admit(Pool::Search).await.unwrap();
    }
}
