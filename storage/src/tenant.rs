//! Tenants: each tenant's data is stored and queried apart, in a
//! [`Storage`] of its own (its own WAL, head, segments and retention), as
//! Grafana Tempo keeps each tenant's blocks under `<tenant>/` and Loki each
//! tenant's chunks under its ID.
//!
//! Layout: the tenant [`DEFAULT_TENANT`] (`single-tenant`, Tempo's name for
//! the one tenant of a single-tenant install) keeps the data directory's
//! root (`<data-dir>/wal`, `<data-dir>/segments`) so an install that turns
//! multi-tenancy on later keeps its data under that name; every other
//! tenant lives in `<data-dir>/tenants/<id>/`, and with an object store
//! under `<prefix>/tenants/<id>/segments/`. Nothing is shared between two
//! tenants' storages but the metrics, which add up.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::StorageMetrics;
use crate::tail::{LogTail, TailLink, DEFAULT_TAIL_CAPACITY};
use crate::{Error, Result, Storage, StorageConfig};

/// The tenant of requests that name none while multi-tenancy is off, and
/// the name under which the data directory's root is reachable when it is
/// on (Tempo's `single-tenant`).
pub const DEFAULT_TENANT: &str = "single-tenant";

/// Longest tenant ID, in bytes (Cortex/Tempo/Loki's limit).
pub const MAX_TENANT_ID_BYTES: usize = 150;

/// A valid tenant ID: 1 to 150 bytes of ASCII letters, digits and
/// `! - _ . * ' ( )`, and neither `.` nor `..`: the rule of Cortex, Tempo
/// and Loki for `X-Scope-OrgID`
/// (<https://grafana.com/docs/mimir/latest/configure/about-tenant-ids/>),
/// which also makes every ID a safe directory name and object key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Checks `s` against the rule above.
    ///
    /// # Errors
    /// A message naming the fault, for the client.
    pub fn parse(s: &str) -> std::result::Result<TenantId, String> {
        if s.is_empty() {
            return Err("the tenant ID is empty".into());
        }
        if s.len() > MAX_TENANT_ID_BYTES {
            return Err(format!(
                "the tenant ID is {} bytes; at most {MAX_TENANT_ID_BYTES} are allowed",
                s.len()
            ));
        }
        if s == "." || s == ".." {
            return Err(format!("{s:?} is not a valid tenant ID"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c))) {
            return Err(format!(
                "the tenant ID {s:?} holds {c:?}; use ASCII letters, digits and ! - _ . * ' ( )"
            ));
        }
        Ok(TenantId(s.into()))
    }

    /// [`DEFAULT_TENANT`].
    pub fn single() -> TenantId {
        TenantId(DEFAULT_TENANT.into())
    }

    /// The ID as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`DEFAULT_TENANT`].
    pub fn is_single(&self) -> bool {
        &*self.0 == DEFAULT_TENANT
    }
}

impl Default for TenantId {
    fn default() -> Self {
        TenantId::single()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// Settings of one tenant that differ from the defaults (`[overrides.<id>]`
/// in the config file, as Tempo's per-tenant overrides).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOverrides {
    /// This tenant's data is deleted this long after it was received
    /// (Tempo's `block_retention`).
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// This tenant's oldest segments are also deleted while its segments take
    /// more bytes than this.
    pub retention_bytes: Option<u64>,
}

/// Tenant settings (`[tenants]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// Most tenants with data or open storage at once; a request for a
    /// new tenant past it is refused, so a stream of made-up `X-Scope-OrgID`
    /// values cannot exhaust disk, memory or file descriptors.
    pub max_tenants: usize,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig { max_tenants: 100 }
    }
}

/// Every tenant's [`Storage`], opened on first use.
pub struct Tenants {
    data_dir: PathBuf,
    cfg: StorageConfig,
    tenants_cfg: TenantsConfig,
    overrides: HashMap<String, TenantOverrides>,
    metrics: Arc<StorageMetrics>,
    default: Arc<Storage>,
    others: RwLock<BTreeMap<TenantId, Arc<Storage>>>,
    /// An empty storage that answers reads of tenants with no data, so a
    /// read never creates a tenant (`data_dir/empty-tenant`, never written).
    empty: Arc<Storage>,
    /// Serialises opening new tenants (two requests for one new tenant
    /// must not both open its directory).
    open_lock: Mutex<()>,
    /// Set by [`Tenants::run_maintenance`]: tenants opened later start
    /// their maintenance at once.
    maintenance: OnceLock<watch::Receiver<bool>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The live tail every tenant's storage publishes to, made on first use
    /// ([`Tenants::tail`]); shared with each storage through its link.
    tail: Arc<OnceLock<Arc<LogTail>>>,
}

impl fmt::Debug for Tenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenants").field("data_dir", &self.data_dir).field("tenants", &self.ids()).finish()
    }
}

impl Tenants {
    /// Opens the default tenant's storage at `data_dir` and every other
    /// tenant's found under `data_dir/tenants/` (not replayed yet: call
    /// [`Tenants::replay`]). Blocking.
    ///
    /// # Errors
    /// As [`Storage::open`], for any tenant; a directory under `tenants/`
    /// whose name is not a valid tenant ID is logged and left alone.
    pub fn open(
        data_dir: &Path,
        cfg: StorageConfig,
        tenants_cfg: TenantsConfig,
        overrides: HashMap<String, TenantOverrides>,
    ) -> Result<Arc<Tenants>> {
        // Every override is checked now, not when its tenant first shows up
        // (a bad one would then refuse that tenant's data forever).
        for id in overrides.keys() {
            let t = TenantId::parse(id).map_err(|e| Error::Config(format!("[overrides.{id:?}]: {e}")))?;
            tenant_config(&cfg, &overrides, &t, Some(&t))
                .map_err(|e| Error::Config(format!("[overrides.{id:?}]: {e}")))?;
        }
        let metrics = Arc::new(StorageMetrics::default());
        let default_cfg = tenant_config(&cfg, &overrides, &TenantId::single(), None)?;
        let default = Storage::open_with_metrics(data_dir, default_cfg, metrics.clone())?;
        let empty_cfg = StorageConfig { storage_url: None, mirror: false, ..cfg.clone() };
        let empty = Storage::open_with_metrics(&data_dir.join("empty-tenant"), empty_cfg, Arc::default())?;
        let t = Tenants {
            data_dir: data_dir.to_path_buf(),
            cfg,
            tenants_cfg,
            overrides,
            metrics,
            default,
            others: RwLock::new(BTreeMap::new()),
            empty,
            open_lock: Mutex::new(()),
            maintenance: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            tail: Arc::default(),
        };
        t.link_tail(&t.default, TenantId::single());
        let dir = data_dir.join("tenants");
        let mut names = Vec::new();
        if dir.is_dir() {
            for e in std::fs::read_dir(&dir)? {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        // A node with an empty data directory learns the tenants from the
        // object store, so their data is read and their retention runs.
        if let Some(r) = &t.default.remote {
            names.extend(r.list_tenants()?);
            if t.cfg.mirror {
                names.extend(t.mirror_tenants()?);
            }
        }
        names.sort();
        names.dedup();
        for name in names {
            match TenantId::parse(&name) {
                Ok(id) if !id.is_single() => {
                    let s = t.open_tenant(&id)?;
                    t.others.write().insert(id, s);
                }
                _ => tracing::warn!(dir = %dir.join(&name).display(), "not a tenant directory; ignored"),
            }
        }
        Ok(Arc::new(t))
    }

    /// A registry whose default tenant is `storage` (already open) and
    /// whose other tenants live under its data directory, with default
    /// tenant settings: for tests and tools that open one storage.
    pub fn from_storage(storage: Arc<Storage>) -> Arc<Tenants> {
        // A storage already linked (a second registry over it in a test)
        // keeps publishing to the tail it has.
        let tail = storage.tail.get().map(|l| l.cell.clone()).unwrap_or_default();
        let t = Arc::new(Tenants {
            data_dir: storage.data_dir.clone(),
            cfg: storage.cfg.clone(),
            tenants_cfg: TenantsConfig::default(),
            overrides: HashMap::new(),
            metrics: storage.metrics.clone(),
            empty: storage.clone(),
            default: storage,
            others: RwLock::new(BTreeMap::new()),
            open_lock: Mutex::new(()),
            maintenance: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            tail,
        });
        t.link_tail(&t.default, TenantId::single());
        t
    }

    fn open_tenant(&self, id: &TenantId) -> Result<Arc<Storage>> {
        let dir = self.data_dir.join("tenants").join(id.as_str());
        let cfg = tenant_config(&self.cfg, &self.overrides, id, Some(id))?;
        let s = Storage::open_with_metrics(&dir, cfg, self.metrics.clone())?;
        self.link_tail(&s, id.clone());
        Ok(s)
    }

    fn link_tail(&self, s: &Storage, tenant: TenantId) {
        let _ = s.tail.set(TailLink { cell: self.tail.clone(), tenant });
    }

    /// The live tail of every tenant's appended log records, made with
    /// `capacity` batches (see [`LogTail::new`]) by the first call; later
    /// calls return that one whatever they pass.
    pub fn tail_with_capacity(&self, capacity: usize) -> &Arc<LogTail> {
        self.tail.get_or_init(|| LogTail::new(capacity))
    }

    /// [`Tenants::tail_with_capacity`] with [`DEFAULT_TAIL_CAPACITY`] if
    /// none was made yet.
    pub fn tail(&self) -> &Arc<LogTail> {
        self.tail_with_capacity(DEFAULT_TAIL_CAPACITY)
    }

    /// Replays every open tenant's WAL ([`Storage::replay`]). Blocking.
    ///
    /// # Errors
    /// The first tenant whose replay failed (named in the message).
    pub fn replay(&self) -> Result<()> {
        // `from_storage` registries answer unknown tenants from the default.
        if !Arc::ptr_eq(&self.empty, &self.default) {
            self.empty.replay()?;
        }
        for (id, s) in self.all() {
            s.replay().map_err(|e| Error::Config(format!("tenant {id}: {e}")))?;
        }
        Ok(())
    }

    /// The metrics every tenant's storage adds to.
    pub fn metrics(&self) -> &Arc<StorageMetrics> {
        &self.metrics
    }

    /// The default tenant's storage.
    pub fn default_storage(&self) -> &Arc<Storage> {
        &self.default
    }

    /// The storage of `id` if it is open, without opening it.
    pub fn get_open(&self, id: &TenantId) -> Option<Arc<Storage>> {
        if id.is_single() {
            return Some(self.default.clone());
        }
        self.others.read().get(id).cloned()
    }

    /// The storage of `id` for writing, opened and replayed first if this is
    /// its first write (a new, empty storage for a new tenant). Blocking the
    /// first time.
    ///
    /// # Errors
    /// [`Error::TooManyTenants`] when `tenants.max_tenants` are open already;
    /// as [`Storage::open`] otherwise.
    pub fn get(&self, id: &TenantId) -> Result<Arc<Storage>> {
        if let Some(s) = self.get_open(id) {
            return Ok(s);
        }
        let _g = self.open_lock.lock();
        if let Some(s) = self.get_open(id) {
            return Ok(s);
        }
        // The default tenant counts as one.
        if self.others.read().len() + 1 >= self.tenants_cfg.max_tenants {
            return Err(Error::TooManyTenants {
                tenant: id.to_string(),
                limit: self.tenants_cfg.max_tenants,
            });
        }
        tracing::info!(tenant = %id, "opening a new tenant's storage");
        let s = self.open_tenant(id)?;
        s.replay()?;
        if let Some(stop) = self.maintenance.get() {
            let task = tokio::runtime::Handle::try_current()
                .map(|h| h.spawn(s.clone().run_maintenance(stop.clone())));
            if let Ok(task) = task {
                self.tasks.lock().push(task);
            }
        }
        self.others.write().insert(id.clone(), s.clone());
        Ok(s)
    }

    /// The storage to read for `id`: its own when it has one, else an empty
    /// storage, so that reading a tenant never creates it (nor counts
    /// toward `tenants.max_tenants`, nor costs memory or files).
    pub fn get_for_read(&self, id: &TenantId) -> Arc<Storage> {
        self.get_open(id).unwrap_or_else(|| self.empty.clone())
    }

    /// [`Tenants::get`] on the blocking pool.
    ///
    /// # Errors
    /// As [`Tenants::get`].
    pub async fn get_async(self: &Arc<Self>, id: &TenantId) -> Result<Arc<Storage>> {
        if let Some(s) = self.get_open(id) {
            return Ok(s);
        }
        let (t, id) = (self.clone(), id.clone());
        tokio::task::spawn_blocking(move || t.get(&id))
            .await
            .map_err(|e| Error::Config(format!("opening a tenant: {e}")))?
    }

    /// The open tenants' IDs, the default first.
    pub fn ids(&self) -> Vec<TenantId> {
        std::iter::once(TenantId::single()).chain(self.others.read().keys().cloned()).collect()
    }

    /// Every open tenant and its storage, the default first.
    pub fn all(&self) -> Vec<(TenantId, Arc<Storage>)> {
        std::iter::once((TenantId::single(), self.default.clone()))
            .chain(self.others.read().iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    /// Whether every open tenant has replayed its WAL.
    pub fn is_ready(&self) -> bool {
        self.all().iter().all(|(_, s)| s.is_ready())
    }

    /// On a query node: the tenants with a directory under any node's
    /// prefix (`nodes/*/tenants/*`), as found.
    fn mirror_tenants(&self) -> Result<Vec<String>> {
        let Some(r) = &self.default.remote else { return Ok(Vec::new()) };
        let mut names = Vec::new();
        for node in r.list_dirs(&["nodes"])? {
            names.extend(r.list_dirs(&["nodes", &node, "tenants"])?);
        }
        Ok(names)
    }

    /// A query node's catalog poll ([`Storage::poll_catalog`]) of every
    /// tenant, opening the storage of tenants new in the bucket first (up
    /// to `tenants.max_tenants`). Blocking.
    ///
    /// # Errors
    /// The first tenant whose poll failed (the others are still polled).
    pub fn poll_catalogs(&self) -> Result<()> {
        if let Some(r) = &self.default.remote {
            let mut names = r.list_tenants()?;
            names.extend(self.mirror_tenants()?);
            names.sort();
            names.dedup();
            for name in names {
                let Ok(id) = TenantId::parse(&name) else { continue };
                if self.get_open(&id).is_none() {
                    if let Err(e) = self.get(&id) {
                        tracing::warn!(tenant = %id, error = %e, "cannot open a tenant found in the bucket");
                    }
                }
            }
        }
        let mut first = None;
        for (id, s) in self.all() {
            if let Err(e) = s.poll_catalog() {
                tracing::warn!(tenant = %id, error = %e, "catalog poll failed");
                first.get_or_insert(Error::Config(format!("tenant {id}: {e}")));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Runs [`Storage::run_maintenance`] for every tenant, those opened
    /// later included, until `stop`; returns once all have ended. Call
    /// after [`Tenants::replay`].
    pub async fn run_maintenance(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let _ = self.maintenance.set(stop.clone());
        {
            let _g = self.open_lock.lock();
            let mut tasks = self.tasks.lock();
            for (_, s) in self.all() {
                tasks.push(tokio::spawn(s.run_maintenance(stop.clone())));
            }
        }
        let _ = stop.wait_for(|s| *s).await;
        // Streaming tail responses end, so the listeners can drain.
        if let Some(t) = self.tail.get() {
            t.close();
        }
        loop {
            let Some(t) = self.tasks.lock().pop() else { break };
            let _ = t.await;
        }
    }
}

/// The storage settings of tenant `id`: the defaults with its overrides,
/// and its own object-store prefix (`sub`) if it is not the default one.
fn tenant_config(
    cfg: &StorageConfig,
    overrides: &HashMap<String, TenantOverrides>,
    id: &TenantId,
    sub: Option<&TenantId>,
) -> Result<StorageConfig> {
    let mut c = cfg.clone();
    if let Some(o) = overrides.get(id.as_str()) {
        if let Some(r) = o.retention {
            c.retention = r;
        }
        if o.retention_bytes.is_some() {
            c.retention_bytes = o.retention_bytes;
        }
    }
    if let (Some(url), Some(id)) = (&cfg.storage_url, sub) {
        if cfg.mirror {
            // Under every node's prefix (`nodes/{node}/tenants/{id}`): the
            // mirror adds the tenant's part itself.
            c.mirror_tenant = Some(id.to_string());
        } else {
            c.storage_url = Some(format!("{}/tenants/{id}", url.trim_end_matches('/')));
        }
    }
    c.check().map_err(|e| Error::Config(format!("tenant {id}: {e}")))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{spans_of_trace, test_config, trace_id};

    #[test]
    fn test_tenant_ids_follow_the_cortex_rule() {
        for ok in ["a", "team-a", "A.b_c", "x!*'()", &"z".repeat(150), DEFAULT_TENANT] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "not a valid"),
            ("..", "not a valid"),
            ("a/b", "'/'"),
            ("../etc", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
            (&"z".repeat(151), "151 bytes"),
        ] {
            let e = TenantId::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// Two tenants' records land in separate directories and are read
    /// apart; a restart finds both; the tenant cap holds.
    #[test]
    fn test_tenants_are_stored_apart() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
        let tid = trace_id(7);
        {
            let t =
                Tenants::open(dir.path(), test_config(), TenantsConfig::default(), HashMap::new()).unwrap();
            t.replay().unwrap();
            let sa = t.get(&a).unwrap();
            rt.block_on(sa.append_spans(spans_of_trace(7, 0, 1))).unwrap();
            assert!(t.get(&b).unwrap().get_trace(&tid).unwrap().is_none());
            assert!(t.default_storage().get_trace(&tid).unwrap().is_none());
            assert_eq!(sa.get_trace(&tid).unwrap().unwrap().0.len(), 1);
            assert!(dir.path().join("tenants/a/wal").is_dir());
        }
        let t = Tenants::open(
            dir.path(),
            test_config(),
            TenantsConfig { max_tenants: 3 },
            HashMap::from([(
                "a".to_string(),
                TenantOverrides { retention: Some(Duration::from_secs(60)), retention_bytes: None },
            )]),
        )
        .unwrap();
        t.replay().unwrap();
        assert_eq!(t.ids(), vec![TenantId::single(), a.clone(), b.clone()]);
        let sa = t.get_open(&a).unwrap();
        assert_eq!(sa.config().retention, Duration::from_secs(60));
        assert_eq!(sa.get_trace(&tid).unwrap().unwrap().0.len(), 1);
        assert!(t.get_open(&b).unwrap().get_trace(&tid).unwrap().is_none());
        // Reads of an unknown tenant find nothing and create nothing.
        let c = TenantId::parse("c").unwrap();
        assert!(t.get_for_read(&c).get_trace(&tid).unwrap().is_none());
        assert!(!dir.path().join("tenants/c").exists() && t.get_open(&c).is_none());
        let e = t.get(&c).unwrap_err();
        assert!(e.to_string().contains("max_tenants"), "{e}");
    }

    /// A bad override is refused at start, not when its tenant first writes.
    #[test]
    fn test_overrides_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let o = TenantOverrides { retention: Some(Duration::ZERO), retention_bytes: None };
        let e = Tenants::open(
            dir.path(),
            test_config(),
            TenantsConfig::default(),
            HashMap::from([("ta".into(), o)]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("retention must be longer than zero"), "{e}");
    }
}
