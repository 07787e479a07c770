//! The memory limit and the in-flight budget: what ingest admits before it
//! reads a request's body.
//!
//! Modelled on the OpenTelemetry Collector's `memory_limiter` processor
//! (`limit_mib`, `spike_limit_mib`, `check_interval`): a hard limit, a soft
//! limit `spike_limit` below it, and resident memory checked every
//! `check_interval`. Above the soft limit every new ingest request is
//! refused with a retryable answer until memory falls back under it; the
//! spike allowance is what may still arrive between two checks. Unlike the
//! Collector, which measures its Go heap, this reads the process's
//! resident memory from `/proc/self/statm` ([`resident_bytes`]): every
//! private allocation and the program's own pages, without the pages of
//! mapped segment files, which are page cache the kernel can drop.
//!
//! The limit also sizes what each part may hold by default (see
//! [`MemoryLimit`]): the head, requests being read and decoded, flushes and
//! compactions, and, for the rest, queries and the runtime. Those shares
//! keep the process under the hard limit when everything peaks together;
//! the resident check catches what the shares do not see.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use crate::{CollectorMetrics, IngestError};

/// The default hard limit on a machine or container with plenty of memory.
/// The project's sizing target is "resident memory under 1 GiB under
/// sustained load" (docs/benchmarks.md), and the defaults before this limit
/// existed (a 512 MiB head, 256 MiB of requests in flight) were sized for
/// about that much.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// The smallest hard limit accepted: below it the process's own base
/// (runtime, index readers, buffers) leaves nothing to ingest with.
pub const MIN_LIMIT: u64 = 64 << 20;

/// `[memory]` in the config file; the hard limit itself is the top-level
/// `memory_limit` (`--memory-limit`), kept in [`MemoryConfig::limit`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// The hard limit on resident memory (`memory_limit`, `--memory-limit`,
    /// e.g. `"1GiB"`). `None`: [`DEFAULT_LIMIT`], or less on a small machine
    /// or container (see [`MemoryConfig::resolve`]).
    #[serde(skip)]
    pub limit: Option<ByteSize>,
    /// How far above the soft limit memory may grow between two checks:
    /// soft limit = `limit - spike_limit`. Default: 20 % of `limit`, the
    /// Collector's default for `spike_limit_mib`, which puts the soft limit
    /// at 80 %, as docs/api.md promises for `--memory-limit`.
    pub spike_limit: Option<ByteSize>,
    /// How often resident memory is read (on the next request after this
    /// long). Reading `/proc/self/statm` costs microseconds, so the default
    /// is ten times the Collector's recommended 1 s: memory can climb less
    /// between two checks.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { limit: None, spike_limit: None, check_interval: Duration::from_millis(100) }
    }
}

impl MemoryConfig {
    /// The limits these settings give. Without `limit`, the hard limit is
    /// the smallest of [`DEFAULT_LIMIT`], 80 % of the cgroup's memory limit
    /// (the container is Skein's alone, and the Collector's guidance for a
    /// container is the same 80 %), and half of the machine's memory
    /// (shared with other processes and the page cache that segment reads
    /// need).
    ///
    /// # Errors
    /// A message naming the setting when the limit is under [`MIN_LIMIT`],
    /// the spike allowance is not below the limit, or the check interval
    /// is zero.
    pub fn resolve(&self) -> Result<MemoryLimit, String> {
        let hard = match self.limit {
            Some(l) => l.as_u64(),
            None => default_limit(),
        };
        if hard < MIN_LIMIT {
            return Err(format!(
                "memory_limit {} is below the minimum of {}",
                ByteSize(hard).display().iec(),
                ByteSize(MIN_LIMIT).display().iec()
            ));
        }
        let spike = self.spike_limit.map_or(hard / 5, |s| s.as_u64());
        if spike >= hard {
            return Err(format!(
                "memory.spike_limit {} must be below memory_limit {} (the soft limit is their difference)",
                ByteSize(spike).display().iec(),
                ByteSize(hard).display().iec()
            ));
        }
        if self.check_interval.is_zero() {
            return Err("memory.check_interval must be longer than zero".into());
        }
        Ok(MemoryLimit { hard, soft: hard - spike, check_interval: self.check_interval })
    }
}

/// The default hard limit: see [`MemoryConfig::resolve`].
fn default_limit() -> u64 {
    let mut limit = DEFAULT_LIMIT;
    if let Some(total) = machine_memory() {
        limit = limit.min(total / 2);
    }
    if let Some(cgroup) = cgroup_limit() {
        limit = limit.min(cgroup / 5 * 4);
    }
    limit.max(MIN_LIMIT)
}

#[cfg(target_os = "linux")]
fn machine_memory() -> Option<u64> {
    use procfs::Current as _;
    procfs::Meminfo::current().ok().map(|m| m.mem_total)
}

#[cfg(not(target_os = "linux"))]
fn machine_memory() -> Option<u64> {
    None
}

/// The memory limit of the cgroup the process runs in (v2 `memory.max`,
/// else v1 `memory.limit_in_bytes`); `None` when there is none ("max", or
/// v1's huge "unlimited" value).
fn cgroup_limit() -> Option<u64> {
    ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 60)
}

/// What the process holds whatever the load, left out of the shares: the
/// program's own pages, the runtime and its thread stacks, open index
/// readers, the allocator's reserve. Measured: 43 MiB resident for an idle
/// debug build, about half that for a release build; at most a quarter of
/// the limit is set aside for it (see [`MemoryLimit::shared`]). Without
/// it, the shares of a small limit did not fit: at 256 MiB the flat-out
/// test (tests/e2e/overload.rs) peaked at 258 MiB.
pub(crate) const BASE_BYTES: u64 = 48 << 20;

/// A resolved memory limit, and the share of it each part gets by default.
///
/// The shares are fractions of the hard limit less the process's base
/// ([`MemoryLimit::shared`]), chosen so that the parts
/// together stay under the soft limit at their usual peak: the head and
/// the block being flushed, in real bytes (up to 4.5/16 at the overload
/// limit, see [`MemoryLimit::head_bytes`]), with the flush's writers
/// beside one block (about 1/16); requests in flight at about three times
/// their wire size once decoded (3/16); a compaction's decoded rows and
/// writers (about 1 KiB a row, see [`MemoryLimit::compaction_rows`]:
/// about 4/16); the rest for queries, the runtime and the allocator's
/// slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes of resident memory the process must stay under.
    pub hard: u64,
    /// Bytes of resident memory above which ingest is refused (retryably).
    pub soft: u64,
    /// How often resident memory is read.
    pub check_interval: Duration,
}

impl MemoryLimit {
    /// The bytes the shares below divide: the hard limit less
    /// [`BASE_BYTES`], or less a quarter of it when that is smaller
    /// (976 MiB of 1 GiB, 208 MiB of 256 MiB, 48 MiB of 64 MiB).
    pub fn shared(&self) -> u64 {
        self.hard - BASE_BYTES.min(self.hard / 4)
    }

    /// The default `head.max_bytes`: 3/16 of the shared part (183 MiB of
    /// 1 GiB). The head counts real allocated bytes (issue 11; within a
    /// fifth of a counting allocator's figure), the block being flushed
    /// included, so with the 1.5 `head.overload_factor` the head and its
    /// flush hold at most 4.5/16; the bigger the head, the fewer and larger
    /// the segments, and the less flush and compaction work per record.
    pub fn head_bytes(&self) -> usize {
        (self.shared() / 16 * 3) as usize
    }

    /// The default `collector.max_inflight_bytes`: 1/16 of the shared
    /// part (61 MiB of 1 GiB), counted as bodies arrive, before decoding.
    pub fn inflight_bytes(&self) -> usize {
        (self.shared() / 16) as usize
    }

    /// The default `compaction.max_segment_bytes`: 1/32 of the shared
    /// part (30.5 MiB of 1 GiB) on disk. The memory of a compaction is bounded by
    /// `compaction.max_rows` ([`MemoryLimit::compaction_rows`]); this
    /// bounds the size of its output.
    pub fn compaction_bytes(&self) -> u64 {
        self.shared() / 32
    }

    /// The default `compaction.max_rows`: one row per 4 KiB of the shared
    /// part (249,856 of 1 GiB). A compaction holds its rows decoded (about their
    /// size in the head, some 0.5-1 KiB each for the shared workload) and
    /// its writers' buffers beside them: about a quarter of the limit.
    pub fn compaction_rows(&self) -> u64 {
        self.shared() / 4096
    }

    /// The default `segment.index_heap_bytes`: 1/16 of the shared part, between
    /// tantivy's 15 MB minimum and the 64 MiB that made no difference above.
    pub fn index_heap_bytes(&self) -> usize {
        (self.shared() / 16).clamp(15_000_000, 64 << 20) as usize
    }
}

/// Resident memory of this process as the limit counts it, in bytes:
/// every anonymous page (the heap, stacks, the allocator's reserve), and
/// pages backed by files only up to the size of the program's code
/// (`/proc/self/statm`: `resident - shared + min(shared, text)`). So the
/// executable's own pages count, but pages of mapped segment files, which
/// can grow with the data queried, do not: they are page cache that the
/// kernel reclaims under pressure (a cgroup limit included) before it
/// kills anything.
#[cfg(target_os = "linux")]
pub fn resident_bytes() -> Option<u64> {
    let m = procfs::process::Process::myself().ok()?.statm().ok()?;
    let anon = m.resident.saturating_sub(m.shared);
    Some((anon + m.shared.min(m.text)).saturating_mul(procfs::page_size()))
}

/// Resident memory of this process as the limit counts it; not known off
/// Linux.
#[cfg(not(target_os = "linux"))]
pub fn resident_bytes() -> Option<u64> {
    None
}

/// The admission state shared by both receivers: the soft limit with the
/// last resident reading, and the bytes of request bodies being read or
/// processed.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: Option<MemoryLimit>,
    inflight_limit: u64,
    inflight: AtomicU64,
    epoch: Instant,
    /// Milliseconds since `epoch` when resident memory is next read.
    next_check_ms: AtomicU64,
    /// The last reading of [`resident_bytes`].
    resident: AtomicU64,
    /// Whether the last reading was over the hard limit (logged once per
    /// crossing, not at every check).
    over_hard: AtomicBool,
    inflight_gauge: Gauge,
    resident_gauge: Gauge,
}

impl Limiter {
    /// A limiter with a budget of `inflight_limit` body bytes and, with
    /// `limit`, the soft limit on resident memory, reporting both in
    /// `metrics`.
    pub(crate) fn new(limit: Option<MemoryLimit>, inflight_limit: usize, metrics: &CollectorMetrics) -> Self {
        metrics.inflight_limit_bytes.set(inflight_limit as i64);
        Limiter {
            limit,
            inflight_limit: inflight_limit as u64,
            inflight: AtomicU64::new(0),
            epoch: Instant::now(),
            next_check_ms: AtomicU64::new(0),
            resident: AtomicU64::new(0),
            over_hard: AtomicBool::new(false),
            inflight_gauge: metrics.inflight_bytes.clone(),
            resident_gauge: metrics.resident_bytes.clone(),
        }
    }

    /// The in-flight budget, bytes.
    pub(crate) fn inflight_limit(&self) -> u64 {
        self.inflight_limit
    }

    /// Bytes of request bodies reserved now.
    #[cfg(test)]
    pub(crate) fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The last resident reading, in bytes (0 before the first).
    pub(crate) fn resident(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// `Err(MemoryLimit)` while resident memory is over the soft limit.
    /// Reads it when the last reading is older than the check interval
    /// (one caller reads; the others use the reading it stores).
    pub(crate) fn check(&self) -> Result<(), IngestError> {
        let Some(l) = self.limit else { return Ok(()) };
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_check_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_check_ms
                .compare_exchange(
                    next,
                    now + l.check_interval.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            if let Some(r) = resident_bytes() {
                self.resident.store(r, Ordering::Relaxed);
                self.resident_gauge.set(r as i64);
                if (r > l.hard) != self.over_hard.swap(r > l.hard, Ordering::Relaxed) {
                    if r > l.hard {
                        tracing::warn!(resident = r, hard_limit = l.hard, "resident memory is over memory_limit; ingest is refused until it is under the soft limit");
                    } else {
                        tracing::info!(
                            resident = r,
                            hard_limit = l.hard,
                            "resident memory is back under memory_limit"
                        );
                    }
                }
            }
        }
        let resident = self.resident();
        if resident > l.soft {
            return Err(IngestError::MemoryLimit { resident, soft: l.soft });
        }
        Ok(())
    }

    /// Reserves `bytes` of the in-flight budget, released when the
    /// returned reservation is dropped.
    ///
    /// # Errors
    /// [`IngestError::Overloaded`] when the budget has no room for them.
    /// A request alone is always admitted (the budget is at least one
    /// request of `max_request_bytes`, which caps each body).
    pub(crate) fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, IngestError> {
        let r = Reservation { limiter: self.clone(), bytes: AtomicU64::new(0) };
        r.grow_to(bytes)?;
        Ok(r)
    }

    fn take(&self, more: u64) -> Result<(), IngestError> {
        let prev = self
            .inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                let next = cur.saturating_add(more);
                (cur == 0 || next <= self.inflight_limit).then_some(next)
            })
            .map_err(|_| IngestError::Overloaded)?;
        self.inflight_gauge.set((prev + more) as i64);
        Ok(())
    }

    fn give_back(&self, bytes: u64) {
        let prev = self.inflight.fetch_sub(bytes, Ordering::AcqRel);
        self.inflight_gauge.set(prev.saturating_sub(bytes) as i64);
    }
}

/// Bytes of the in-flight budget held by one request, from before its body
/// is read until it is answered; grows as the body arrives and is
/// decompressed.
#[derive(Debug)]
pub(crate) struct Reservation {
    limiter: Arc<Limiter>,
    bytes: AtomicU64,
}

impl Reservation {
    /// Grows the reservation to `total` bytes (never shrinks it).
    ///
    /// # Errors
    /// [`IngestError::Overloaded`] when the budget has no room for the
    /// growth; the reservation keeps what it had.
    pub(crate) fn grow_to(&self, total: u64) -> Result<(), IngestError> {
        let have = self.bytes.load(Ordering::Acquire);
        if total <= have {
            return Ok(());
        }
        self.limiter.take(total - have)?;
        self.bytes.fetch_add(total - have, Ordering::AcqRel);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.limiter.give_back(*self.bytes.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(limit: &str, spike: Option<&str>) -> MemoryConfig {
        MemoryConfig {
            limit: Some(limit.parse().unwrap()),
            spike_limit: spike.map(|s| s.parse().unwrap()),
            ..MemoryConfig::default()
        }
    }

    /// Soft = hard - spike, the spike 20 % by default, as the Collector's
    /// `memory_limiter` computes it; nonsense is refused with the key.
    #[test]
    fn test_soft_limit_is_hard_minus_spike() {
        let l = cfg("1GiB", None).resolve().unwrap();
        assert_eq!(l.hard, 1 << 30);
        assert_eq!(l.soft, (1 << 30) - (1 << 30) / 5);
        assert_eq!(l.shared(), 976 << 20);
        assert_eq!(l.head_bytes(), (976 << 20) / 16 * 3);
        assert_eq!(l.inflight_bytes(), 61 << 20);
        assert_eq!(l.compaction_rows(), 249_856);
        // A small limit keeps three quarters for the shares.
        assert_eq!(cfg("64MiB", None).resolve().unwrap().shared(), 48 << 20);
        let l = cfg("256MiB", Some("56MiB")).resolve().unwrap();
        assert_eq!(l.soft, 200 << 20);
        assert!(cfg("1GiB", Some("1GiB")).resolve().unwrap_err().contains("spike_limit"));
        assert!(cfg("10MiB", None).resolve().unwrap_err().contains("minimum"));
        let d = MemoryConfig::default().resolve().unwrap();
        assert!(d.hard <= DEFAULT_LIMIT && d.hard >= MIN_LIMIT, "{d:?}");
    }

    /// The budget admits a request alone whatever its size, refuses one
    /// that does not fit beside others, and is given back on drop.
    #[test]
    fn test_inflight_budget() {
        let l = Arc::new(Limiter::new(None, 100, &CollectorMetrics::default()));
        let big = l.reserve(150).unwrap();
        assert!(matches!(l.reserve(1), Err(IngestError::Overloaded)));
        drop(big);
        let a = l.reserve(60).unwrap();
        let b = l.reserve(40).unwrap();
        assert!(matches!(b.grow_to(41), Err(IngestError::Overloaded)));
        assert_eq!(l.inflight(), 100);
        drop(a);
        b.grow_to(90).unwrap();
        assert_eq!(l.inflight(), 90);
        drop(b);
        assert_eq!(l.inflight(), 0);
    }

    /// Over the soft limit, `check` refuses; the reading is this process's.
    #[cfg(target_os = "linux")]
    #[test]
    fn test_check_reads_resident_memory() {
        let r = resident_bytes().unwrap();
        assert!(r > 1 << 20, "{r}");
        let tiny = MemoryLimit { hard: 2, soft: 1, check_interval: Duration::from_millis(1) };
        let m = CollectorMetrics::default();
        let l = Limiter::new(Some(tiny), 100, &m);
        assert!(matches!(l.check(), Err(IngestError::MemoryLimit { .. })));
        let roomy =
            MemoryLimit { hard: u64::MAX, soft: u64::MAX - 1, check_interval: Duration::from_millis(1) };
        assert!(Limiter::new(Some(roomy), 100, &m).check().is_ok());
        assert!(m.resident_bytes.get() > 1 << 20);
    }
}
