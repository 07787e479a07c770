//! Alerting: rules from the config file (`[alerts]`), evaluated every
//! `evaluation_interval` through the query [`Engine`](crate::Engine),
//! with Prometheus's states and `for` ([`state`]), and notifications to
//! webhooks ([`notify`]) that link to the UI search showing the matching
//! traces. `GET /api/v1/alerts` ([`router`]) lists the rules and their
//! state. docs/alerts.md is the user's guide.
//!
//! Durability: each rule's state and the notifications not yet delivered
//! are one JSON document on local disk ([`StateFile`], written
//! atomically), stored after every evaluation round and after every
//! delivery round, and read at start. So a restart neither fires a
//! firing alert again nor forgets one (a rule that stopped holding while
//! Skein was down is resolved, and notified, by the first evaluation); a
//! pending alert keeps its `active_at`. Delivery is at least once: a
//! crash between a delivery and the store after it sends that
//! notification again.
//!
//! Tenants: with multitenancy every rule names its tenant and reads only
//! that tenant's data; `/api/v1/alerts` lists the requesting tenant's
//! rules.

pub mod notify;
pub mod rules;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skein_storage::state::StateFile;
use tokio::sync::watch;

use crate::{ApiState, Tenant};
use notify::{Format, Notification, Receiver, ReceiverConfig, Status};
use rules::{Rule, RuleConfig};
use state::{AlertState, RuleState, Transition};

/// `[alerts]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often every rule is evaluated (Prometheus's
    /// `evaluation_interval`, default 1m).
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// The URL users reach Skein's UI at, for the links in notifications
    /// (default: `http://` and `--http-addr`).
    pub external_url: Option<String>,
    /// How long one delivery may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub notification_timeout: Duration,
    /// Deliveries tried per notification before it is dropped (and
    /// counted as dropped).
    pub max_attempts: u32,
    /// The longest wait between two tries of a notification; the wait
    /// starts at `evaluation_interval` and doubles per failure.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How often a firing alert is sent again to `alertmanager`
    /// receivers, which resolve an alert that is not (Prometheus's
    /// `--rules.alert.resend-delay`, default 1m).
    #[serde(with = "humantime_serde")]
    pub resend_delay: Duration,
    /// `[[alerts.rules]]`.
    pub rules: Vec<RuleConfig>,
    /// `[[alerts.receivers]]`.
    pub receivers: Vec<ReceiverConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluation_interval: Duration::from_secs(60),
            external_url: None,
            notification_timeout: Duration::from_secs(10),
            max_attempts: 10,
            max_backoff: Duration::from_secs(300),
            resend_delay: Duration::from_secs(60),
            rules: Vec::new(),
            receivers: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// Checks every rule and receiver.
    ///
    /// # Errors
    /// The first fault, naming the rule or receiver and the field.
    pub fn check(&self, multitenancy: bool) -> Result<(Vec<Rule>, Vec<Receiver>), String> {
        for (name, zero) in [
            ("evaluation_interval", self.evaluation_interval.is_zero()),
            ("notification_timeout", self.notification_timeout.is_zero()),
            ("max_attempts", self.max_attempts == 0),
        ] {
            if zero {
                return Err(format!("alerts.{name} must be more than 0"));
            }
        }
        if let Some(u) = &self.external_url {
            let ok =
                reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(format!("alerts.external_url: {u:?} is not an http:// or https:// URL"));
            }
        }
        let mut receivers: Vec<Receiver> = Vec::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let r = r.check(i)?;
            if receivers.iter().any(|x| x.name == r.name) {
                return Err(format!("alert receiver {:?}: name: used by another receiver", r.name));
            }
            receivers.push(r);
        }
        let names: Vec<String> = receivers.iter().map(|r| r.name.clone()).collect();
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let r = r.check(i, &names, multitenancy)?;
            if rules.iter().any(|x| x.name == r.name && x.tenant == r.tenant) {
                return Err(format!(
                    "alert rule {:?}: name: used by another rule of tenant {}",
                    r.name, r.tenant
                ));
            }
            rules.push(r);
        }
        Ok((rules, receivers))
    }
}

/// The document kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Persisted {
    /// `tenant/rule name` -> state.
    rules: BTreeMap<String, RuleState>,
    /// `tenant/rule name` -> when a firing alert was last queued for the
    /// Alertmanager receivers, Unix ns.
    resent: BTreeMap<String, u64>,
    /// Notifications not yet delivered, oldest first.
    outbox: Vec<Notification>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The alerting counters `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    notifications: Family<ReceiverLabels, Counter>,
    evaluations: Family<OutcomeLabel, Counter>,
    state_writes_failed: Counter,
}

impl AlertMetrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> AlertMetrics {
        let m = AlertMetrics::default();
        registry.register(
            "skein_alert_notifications",
            "Alert notifications per receiver: sent, failed deliveries (tried again later) and dropped after alerts.max_attempts",
            m.notifications.clone(),
        );
        registry.register(
            "skein_alert_evaluations",
            "Alert rule evaluations, by outcome (ok or error)",
            m.evaluations.clone(),
        );
        registry.register(
            "skein_alert_state_write_failures",
            "Failed writes of the alert state file (retried at the next evaluation)",
            m.state_writes_failed.clone(),
        );
        m
    }
}

/// The rules, their state, the receivers, and the evaluation loop.
#[derive(Debug)]
pub struct Alerts {
    rules: Vec<Rule>,
    receivers: Vec<Receiver>,
    cfg: AlertsConfig,
    external_url: String,
    api: ApiState,
    file: StateFile,
    state: Mutex<Persisted>,
    client: reqwest::Client,
    metrics: AlertMetrics,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn key(r: &Rule) -> String {
    format!("{}/{}", r.tenant, r.name)
}

impl Alerts {
    /// The alerting of `cfg` over `api`'s engine, its state kept in
    /// `file` (read now), links built on `external_url` (trailing `/`
    /// ignored), counted in `metrics`. State of rules no longer
    /// configured is dropped.
    ///
    /// # Errors
    /// An invalid config (as [`AlertsConfig::check`]), or a state file
    /// that cannot be read or is not valid.
    pub fn new(
        cfg: AlertsConfig,
        multitenancy: bool,
        api: ApiState,
        file: StateFile,
        external_url: &str,
        metrics: AlertMetrics,
    ) -> Result<Arc<Alerts>, String> {
        let (rules, receivers) = cfg.check(multitenancy)?;
        let mut st: Persisted =
            match file.load().map_err(|e| format!("reading {}: {e}", file.path().display()))? {
                Some(b) => serde_json::from_slice::<Persisted>(&b).map_err(|e| {
                    format!(
                        "alert state {} is not valid ({e}); move it aside to start afresh",
                        file.path().display()
                    )
                })?,
                None => Persisted::default(),
            };
        let keys: Vec<String> = rules.iter().map(key).collect();
        st.rules.retain(|k, _| keys.contains(k));
        st.resent.retain(|k, _| keys.contains(k));
        st.outbox.retain(|n| receivers.iter().any(|r| r.name == n.receiver));
        let client = reqwest::Client::builder()
            .timeout(cfg.notification_timeout)
            .user_agent(concat!("skein/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("alert notifications: {e}"))?;
        for r in &receivers {
            for outcome in ["sent", "failed", "dropped"] {
                drop(
                    metrics
                        .notifications
                        .get_or_create(&ReceiverLabels { receiver: r.name.clone(), outcome }),
                );
            }
        }
        Ok(Arc::new(Alerts {
            rules,
            receivers,
            cfg,
            external_url: external_url.trim_end_matches('/').to_string(),
            api,
            file,
            state: Mutex::new(st),
            client,
            metrics,
        }))
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates every rule every `evaluation_interval` (the first round
    /// at once) and delivers notifications, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.evaluation_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.round(now_ns()).await;
        }
    }

    /// One evaluation round at `now_ns`: every rule, then the outbox.
    pub async fn round(&self, now_ns: u64) {
        self.evaluate(now_ns).await;
        self.store().await;
        if self.deliver(now_ns).await {
            self.store().await;
        }
    }

    /// Evaluates every rule at `now_ns`, queueing the notifications their
    /// transitions call for.
    pub async fn evaluate(&self, now_ns: u64) {
        for rule in &self.rules {
            let result = match self.api.engine(&rule.tenant).await {
                Ok(engine) => rule.evaluate(&engine, now_ns).await,
                Err(e) => Err(e),
            };
            let k = key(rule);
            let mut st = self.state.lock();
            let rs = st.rules.entry(k.clone()).or_default();
            let value = match result {
                Ok(v) => {
                    self.metrics.evaluations.get_or_create(&OutcomeLabel { outcome: "ok" }).inc();
                    v
                }
                Err(e) => {
                    self.metrics.evaluations.get_or_create(&OutcomeLabel { outcome: "error" }).inc();
                    tracing::warn!(rule = %rule.name, tenant = %rule.tenant, error = %e, "alert rule evaluation failed");
                    rs.failed(now_ns, e.to_string());
                    continue;
                }
            };
            // `+ 0.0` turns an empty sum's -0.0 into 0.
            let value = value.map(|v| v + 0.0);
            rs.value = value;
            let holds = value.is_some_and(|v| rule.comparison.holds(v, rule.threshold));
            let for_ns = u64::try_from(rule.for_.as_nanos()).unwrap_or(u64::MAX);
            let active_before = rs.active_at_ns;
            let t = rs.step(holds, now_ns, for_ns);
            // Prometheus's `startsAt` is the alert's active time, when its
            // condition began to hold (before `for`).
            // A resolve clears the active time: the resolved notification
            // keeps the firing one's.
            let starts_at = rs.active_at_ns.or(active_before).or(rs.fired_at_ns).unwrap_or(now_ns);
            let firing = rs.state == AlertState::Firing;
            let status = match t {
                Transition::Fired => Some(Status::Firing),
                Transition::Resolved => Some(Status::Resolved),
                Transition::None => None,
            };
            if let Some(status) = status {
                tracing::info!(rule = %rule.name, tenant = %rule.tenant, ?status, ?value, "alert state changed");
                for r in self.receivers.iter().filter(|r| rule.receivers.contains(&r.name)) {
                    let n = self.notification(rule, r, status, value, starts_at, now_ns);
                    st.outbox.push(n);
                }
                st.resent.insert(k.clone(), now_ns);
            } else if firing {
                // Alertmanager forgets an alert not sent again within its
                // endsAt; Prometheus sends firing alerts again every
                // resend delay.
                let resend = u64::try_from(self.cfg.resend_delay.as_nanos()).unwrap_or(u64::MAX);
                let last = st.resent.get(&k).copied().unwrap_or(0);
                if now_ns.saturating_sub(last) >= resend {
                    for r in self
                        .receivers
                        .iter()
                        .filter(|r| r.format == Format::Alertmanager && rule.receivers.contains(&r.name))
                    {
                        let queued = st.outbox.iter().any(|n| {
                            n.receiver == r.name && n.rule == rule.name && n.tenant == rule.tenant.as_str()
                        });
                        if !queued {
                            let n = self.notification(rule, r, Status::Firing, value, starts_at, now_ns);
                            st.outbox.push(n);
                        }
                    }
                    st.resent.insert(k, now_ns);
                }
            }
        }
    }

    fn notification(
        &self,
        rule: &Rule,
        r: &Receiver,
        status: Status,
        value: Option<f64>,
        starts_at_ns: u64,
        now_ns: u64,
    ) -> Notification {
        let ends_at_ns = match status {
            Status::Resolved => Some(now_ns),
            // As Prometheus: valid for four resend delays (or intervals).
            Status::Firing if r.format == Format::Alertmanager => {
                let d = self.cfg.resend_delay.max(self.cfg.evaluation_interval) * 4;
                Some(now_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
            }
            Status::Firing => None,
        };
        Notification {
            receiver: r.name.clone(),
            tenant: rule.tenant.to_string(),
            rule: rule.name.clone(),
            status,
            labels: rule.labels.clone(),
            annotations: rule.annotations.clone(),
            value,
            expression: rule.expression(),
            starts_at_ns,
            ends_at_ns,
            url: format!("{}{}", self.external_url, rule.search_link(now_ns)),
            attempts: 0,
            next_attempt_ns: 0,
            last_error: None,
        }
    }

    /// Tries the notifications that are due, oldest first; a receiver
    /// that fails is not tried again this round, so each receiver gets
    /// its notifications in order. Returns whether the outbox changed.
    pub async fn deliver(&self, now_ns: u64) -> bool {
        let due: Vec<(usize, Notification)> = {
            // A receiver gets its notifications in order: the oldest one
            // still waiting for a retry holds back every newer one of its
            // receiver, even one that is due.
            let st = self.state.lock();
            let mut waiting: Vec<&str> = Vec::new();
            let mut due = Vec::new();
            for (i, n) in st.outbox.iter().enumerate() {
                if waiting.contains(&n.receiver.as_str()) {
                    continue;
                }
                if n.next_attempt_ns > now_ns {
                    waiting.push(&n.receiver);
                    continue;
                }
                due.push((i, n.clone()));
            }
            due
        };
        if due.is_empty() {
            return false;
        }
        let mut failed_receivers: Vec<String> = Vec::new();
        let mut outcomes: Vec<(usize, Result<(), String>)> = Vec::new();
        for (i, n) in due {
            if failed_receivers.contains(&n.receiver) {
                continue;
            }
            let Some(r) = self.receivers.iter().find(|r| r.name == n.receiver) else { continue };
            let res = notify::deliver(&self.client, r, &n, &self.external_url).await;
            if let Err(e) = &res {
                tracing::warn!(receiver = %r.name, rule = %n.rule, error = %e, attempt = n.attempts + 1, "alert notification failed");
                failed_receivers.push(n.receiver.clone());
            }
            outcomes.push((i, res));
        }
        let mut st = self.state.lock();
        let mut remove = Vec::new();
        for (i, res) in outcomes {
            let n = &mut st.outbox[i];
            let outcome = match res {
                Ok(()) => {
                    remove.push(i);
                    "sent"
                }
                Err(e) => {
                    n.attempts += 1;
                    n.last_error = Some(e);
                    if n.attempts >= self.cfg.max_attempts {
                        tracing::warn!(receiver = %n.receiver, rule = %n.rule, attempts = n.attempts, "alert notification dropped after alerts.max_attempts");
                        self.metrics
                            .notifications
                            .get_or_create(&ReceiverLabels {
                                receiver: n.receiver.clone(),
                                outcome: "dropped",
                            })
                            .inc();
                        remove.push(i);
                    } else {
                        let wait =
                            notify::backoff(n.attempts, self.cfg.evaluation_interval, self.cfg.max_backoff);
                        n.next_attempt_ns =
                            now_ns.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX));
                    }
                    "failed"
                }
            };
            self.metrics
                .notifications
                .get_or_create(&ReceiverLabels { receiver: st.outbox[i].receiver.clone(), outcome })
                .inc();
        }
        remove.sort_unstable();
        for i in remove.into_iter().rev() {
            st.outbox.remove(i);
        }
        true
    }

    /// Writes the state document (durable when it returns, see
    /// [`StateFile::store`]); a failure is logged and counted, and the
    /// next round writes again.
    async fn store(&self) {
        let bytes = match serde_json::to_vec(&*self.state.lock()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "alert state not serializable");
                return;
            }
        };
        let file = self.file.clone();
        let res = tokio::task::spawn_blocking(move || file.store(&bytes)).await;
        if let Err(e) = res.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            self.metrics.state_writes_failed.inc();
            tracing::warn!(path = %self.file.path().display(), error = %e, "writing the alert state failed; retried at the next evaluation");
        }
    }

    /// `/api/v1/alerts`'s answer for `tenant`.
    fn list(&self, tenant: &skein_storage::tenant::TenantId) -> Value {
        let st = self.state.lock();
        let ns = |v: Option<u64>| v.map(|x| x.to_string());
        let rules: Vec<Value> = self
            .rules
            .iter()
            .filter(|r| r.tenant == *tenant)
            .map(|r| {
                let s = st.rules.get(&key(r)).cloned().unwrap_or_default();
                let health = match (&s.last_error, s.last_evaluation_ns) {
                    (Some(_), _) => "err",
                    (None, Some(_)) => "ok",
                    (None, None) => "unknown",
                };
                let pending: usize =
                    st.outbox.iter().filter(|n| n.rule == r.name && n.tenant == r.tenant.as_str()).count();
                json!({
                    "name": r.name,
                    "kind": r.kind_name(),
                    "query": r.expression(),
                    "comparison": r.comparison.as_str(),
                    "threshold": r.threshold,
                    "window_ns": u64::try_from(r.window.as_nanos()).unwrap_or(u64::MAX),
                    "for_ns": u64::try_from(r.for_.as_nanos()).unwrap_or(u64::MAX),
                    "state": s.state.as_str(),
                    "active_at": ns(s.active_at_ns),
                    "fired_at": ns(s.fired_at_ns),
                    "last_evaluation": ns(s.last_evaluation_ns),
                    "value": s.value,
                    "health": health,
                    "last_error": s.last_error,
                    "labels": r.labels,
                    "annotations": r.annotations,
                    "receivers": r.receivers,
                    "undelivered_notifications": pending,
                    "search_url": r.search_link(s.last_evaluation_ns.unwrap_or_else(now_ns)),
                })
            })
            .collect();
        json!({
            "evaluation_interval_ns": u64::try_from(self.cfg.evaluation_interval.as_nanos()).unwrap_or(u64::MAX),
            "rules": rules,
        })
    }
}

/// `GET /api/v1/alerts`: the requesting tenant's rules and their state.
pub fn router(alerts: Arc<Alerts>) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .with_state(alerts)
}

/// `GET /api/v1/alerts`; a parameter is a 400, as on every native
/// endpoint ([`crate::params::Params::only`]): it takes none.
async fn list(
    State(a): State<Arc<Alerts>>,
    Tenant(tenant): Tenant,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    if let Err(e) = crate::params::Params::parse(q.as_deref()).only(&[]) {
        return e.into_response();
    }
    Json(a.list(&tenant)).into_response()
}

#[cfg(test)]
mod tests;
