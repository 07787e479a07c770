//! Alert rules: their config (`[[alerts.rules]]`), the checks that turn it
//! into a [`Rule`], and how a rule's value is computed through the
//! [`Engine`].
//!
//! The three kinds and where their value comes from:
//! - `error_rate`: errors / requests of a service's entry spans (the RED
//!   rollups, [`Engine::red`], as `/api/v1/metrics/red` answers them).
//! - `latency`: a duration quantile of a service's operation, seconds
//!   (`quantile_over_time(duration, q)`, answered from the rollups'
//!   sketches).
//! - `traceql_count`: the spans a TraceQL spanset query selects
//!   (`{...} | count_over_time()`).
//!
//! The rollups count per minute, so the first two read the whole minutes
//! that overlap `[now - window, now]`; the count reads exactly
//! `[now - window, now)`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use skein_storage::rollup::BUCKET_NS;
use skein_storage::tenant::TenantId;

use crate::engine::{MetricsQuery, RedQuery};
use crate::error::Result;
use crate::traceql::TraceQl;
use crate::Engine;

/// One `[[alerts.rules]]` entry as written in the config file. Which
/// fields apply depends on `kind`; a field another kind takes is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique per tenant; the `alertname` label of notifications.
    pub name: String,
    /// `error_rate`, `latency` or `traceql_count`.
    pub kind: String,
    /// The service (`error_rate`, `latency`).
    pub service: Option<String>,
    /// The operation, i.e. span name (`latency`).
    pub operation: Option<String>,
    /// The quantile, 0..=1 (`latency`; default 0.99).
    pub quantile: Option<f64>,
    /// A TraceQL spanset query, e.g. `{ status = error && span.http.route = "/pay" }`
    /// (`traceql_count`).
    pub query: Option<String>,
    /// How the value is compared with the threshold: `>`, `>=`, `<`,
    /// `<=`, `==` or `!=` (default `>`).
    #[serde(default)]
    pub comparison: Option<String>,
    /// A number: a ratio 0..=1 for `error_rate`, a count for
    /// `traceql_count`; for `latency` seconds or a duration (`"500ms"`).
    pub threshold: Threshold,
    /// How far back the value looks (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// How long the condition must hold before the alert fires
    /// (Prometheus's `for`; default 0: fire at the first evaluation).
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub for_: Option<Duration>,
    /// Labels added to the alert's (`alertname`, `severity`, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, `runbook_url`, ...).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The tenant whose data the rule reads (with multitenancy only).
    pub tenant: Option<String>,
    /// The receivers notified, by name (default: every receiver).
    pub receivers: Option<Vec<String>>,
}

/// A threshold: a number, or a duration string for `latency`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    /// A plain number.
    Number(f64),
    /// `"500ms"`, `"1.5s"` (latency only).
    Duration(String),
}

/// How a rule's value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Comparison {
    fn parse(s: &str) -> Option<Comparison> {
        Some(match s.trim() {
            ">" => Comparison::Gt,
            ">=" => Comparison::Ge,
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            "==" => Comparison::Eq,
            "!=" => Comparison::Ne,
            _ => return None,
        })
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }

    /// Whether `value OP threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Eq => value == threshold,
            Comparison::Ne => value != threshold,
        }
    }
}

/// What a rule measures.
#[derive(Debug, Clone)]
pub enum RuleKind {
    /// Errors / requests of `service`'s entry spans.
    ErrorRate {
        /// The service.
        service: String,
    },
    /// The `quantile` of the durations of `service`'s `operation` spans,
    /// seconds.
    Latency {
        /// The service.
        service: String,
        /// The span name.
        operation: String,
        /// 0..=1.
        quantile: f64,
        /// `{ resource.service.name = service && name = operation } |
        /// quantile_over_time(duration, quantile)`, parsed once when the
        /// rule is checked.
        metrics: TraceQl,
    },
    /// Spans `query` selects.
    TraceqlCount {
        /// The spanset query as written.
        query: String,
        /// `{query} | count_over_time()`, parsed.
        metrics: TraceQl,
    },
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique per tenant.
    pub name: String,
    /// What it measures.
    pub kind: RuleKind,
    /// How the value is compared.
    pub comparison: Comparison,
    /// Compared with the value (seconds for latency).
    pub threshold: f64,
    /// How far back the value looks.
    pub window: Duration,
    /// How long the condition must hold before firing.
    pub for_: Duration,
    /// Labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The tenant whose data it reads.
    pub tenant: TenantId,
    /// The receivers it notifies, by name.
    pub receivers: Vec<String>,
}

/// Quantile of a `latency` rule without one: Prometheus's and Jaeger's
/// usual p99.
const DEFAULT_QUANTILE: f64 = 0.99;
/// Window of a rule without one.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

impl RuleConfig {
    /// Checks the rule; `index` is its place among `[[alerts.rules]]`
    /// (for naming it when it has no name), `receivers` the names of the
    /// configured receivers.
    ///
    /// # Errors
    /// A message naming the rule and the field at fault.
    pub fn check(&self, index: usize, receivers: &[String], multitenancy: bool) -> Result<Rule, String> {
        let who = if self.name.trim().is_empty() {
            format!("alerts.rules[{index}]")
        } else {
            format!("alert rule {:?}", self.name)
        };
        let err = |field: &str, why: String| format!("{who}: {field}: {why}");
        if self.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let only = |field: &str, set: bool, kinds: &str| -> Result<(), String> {
            if set {
                return Err(err(field, format!("applies to kind {kinds} only, not {:?}", self.kind)));
            }
            Ok(())
        };
        let need = |field: &str, v: &Option<String>| -> Result<String, String> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(err(field, format!("kind {:?} needs it", self.kind))),
            }
        };
        let number = |what: &str| -> Result<f64, String> {
            match &self.threshold {
                Threshold::Number(n) if n.is_finite() => Ok(*n),
                Threshold::Number(_) => Err(err("threshold", "must be a finite number".into())),
                Threshold::Duration(s) => {
                    Err(err("threshold", format!("{s:?}: kind {:?} takes {what}", self.kind)))
                }
            }
        };
        let (kind, threshold) = match self.kind.as_str() {
            "error_rate" => {
                only("operation", self.operation.is_some(), "latency")?;
                only("quantile", self.quantile.is_some(), "latency")?;
                only("query", self.query.is_some(), "traceql_count")?;
                let t = number("a ratio between 0 and 1 (0.05 for 5 %)")?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(err(
                        "threshold",
                        format!("{t} is not a ratio between 0 and 1 (0.05 for 5 %)"),
                    ));
                }
                (RuleKind::ErrorRate { service: need("service", &self.service)? }, t)
            }
            "latency" => {
                only("query", self.query.is_some(), "traceql_count")?;
                let quantile = self.quantile.unwrap_or(DEFAULT_QUANTILE);
                if !(0.0..=1.0).contains(&quantile) {
                    return Err(err("quantile", format!("{quantile} is not between 0 and 1")));
                }
                let t = match &self.threshold {
                    Threshold::Number(n) if n.is_finite() && *n >= 0.0 => *n,
                    Threshold::Number(n) => return Err(err("threshold", format!("{n} is not a duration"))),
                    Threshold::Duration(s) => crate::parse_duration_ns(s)
                        .map(|ns| ns as f64 / 1e9)
                        .map_err(|e| err("threshold", e))?,
                };
                let (service, operation) =
                    (need("service", &self.service)?, need("operation", &self.operation)?);
                let text = format!(
                    "{{ resource.service.name = {} && name = {} }} | quantile_over_time(duration, {quantile})",
                    quoted(&service),
                    quoted(&operation)
                );
                let metrics = TraceQl::parse_metrics(&text).map_err(|e| err("operation", e.to_string()))?;
                let kind = RuleKind::Latency { service, operation, quantile, metrics };
                (kind, t)
            }
            "traceql_count" => {
                only("service", self.service.is_some(), "error_rate or latency")?;
                only("operation", self.operation.is_some(), "latency")?;
                only("quantile", self.quantile.is_some(), "latency")?;
                let query = need("query", &self.query)?;
                let spanset_only = || {
                    err(
                        "query",
                        "takes a spanset query (`{ ... }`); the rule counts the spans it selects itself"
                            .into(),
                    )
                };
                match TraceQl::parse(&query) {
                    Ok(q) if q.is_metrics() => return Err(spanset_only()),
                    Ok(_) => {}
                    Err(_) if TraceQl::parse_metrics(&query).is_ok() => return Err(spanset_only()),
                    Err(e) => return Err(err("query", e.to_string())),
                }
                let metrics = TraceQl::parse_metrics(&format!("{query} | count_over_time()"))
                    .map_err(|e| err("query", e.to_string()))?;
                (RuleKind::TraceqlCount { query, metrics }, number("a count of spans")?)
            }
            other => {
                return Err(err(
                    "kind",
                    format!("{other:?} is not one of \"error_rate\", \"latency\", \"traceql_count\""),
                ))
            }
        };
        let comparison = match &self.comparison {
            None => Comparison::Gt,
            Some(c) => Comparison::parse(c)
                .ok_or_else(|| err("comparison", format!("{c:?} is not one of >, >=, <, <=, ==, !=")))?,
        };
        let window = self.window.unwrap_or(DEFAULT_WINDOW);
        if window.is_zero() {
            return Err(err("window", "must be longer than 0".into()));
        }
        let tenant = match (&self.tenant, multitenancy) {
            (Some(t), true) => TenantId::parse(t).map_err(|e| err("tenant", e))?,
            (None, true) => {
                return Err(err(
                    "tenant",
                    "with multitenancy_enabled every rule names the tenant it reads".into(),
                ))
            }
            (Some(t), false) if t != skein_storage::tenant::DEFAULT_TENANT => {
                return Err(err("tenant", "is for multitenancy_enabled = true only".into()))
            }
            _ => TenantId::single(),
        };
        let receivers = match &self.receivers {
            None => receivers.to_vec(),
            Some(names) => {
                if let Some(n) = names.iter().find(|n| !receivers.contains(n)) {
                    return Err(err("receivers", format!("no receiver named {n:?} in [[alerts.receivers]]")));
                }
                names.clone()
            }
        };
        if let Some(k) = self.labels.keys().find(|k| !valid_label_name(k)) {
            return Err(err("labels", format!("{k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")));
        }
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), self.name.clone());
        Ok(Rule {
            name: self.name.clone(),
            kind,
            comparison,
            threshold,
            window,
            for_: self.for_.unwrap_or_default(),
            labels,
            annotations: self.annotations.clone(),
            tenant,
            receivers,
        })
    }
}

/// Prometheus's label name rule (data model docs).
fn valid_label_name(k: &str) -> bool {
    let mut c = k.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// TraceQL's string literal of `s`.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Rule {
    /// The rule's kind as configured.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::ErrorRate { .. } => "error_rate",
            RuleKind::Latency { .. } => "latency",
            RuleKind::TraceqlCount { .. } => "traceql_count",
        }
    }

    /// What the rule measures, in one line, e.g.
    /// `error_rate{service="cart"}[5m] > 0.05`.
    pub fn expression(&self) -> String {
        let w = humantime::format_duration(self.window);
        let what = match &self.kind {
            RuleKind::ErrorRate { service } => format!("error_rate{{service={}}}[{w}]", quoted(service)),
            RuleKind::Latency { service, operation, quantile, .. } => format!(
                "{{ resource.service.name = {} && name = {} }} | quantile_over_time(duration, {quantile}) [{w}]",
                quoted(service),
                quoted(operation)
            ),
            RuleKind::TraceqlCount { query, .. } => format!("{query} | count_over_time() [{w}]"),
        };
        format!("{what} {} {}", self.comparison.as_str(), self.threshold)
    }

    /// The range the value covers at `now_ns`: `[start, end)` Unix ns
    /// (whole minutes for the rollup kinds).
    pub fn range(&self, now_ns: u64) -> (u64, u64) {
        let w = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let start = now_ns.saturating_sub(w);
        match self.kind {
            RuleKind::TraceqlCount { .. } => (start, now_ns.max(start + 1)),
            _ => (start - start % BUCKET_NS, (now_ns / BUCKET_NS + 1) * BUCKET_NS),
        }
    }

    /// The rule's value at `now_ns`; `None` when there is nothing to
    /// measure (no requests for an error rate, no spans for a latency),
    /// which never meets the condition (as a Prometheus expression with
    /// an empty result).
    ///
    /// # Errors
    /// The engine's: a deadline, too many series, storage.
    pub async fn evaluate(&self, engine: &Engine, now_ns: u64) -> Result<Option<f64>> {
        let (start_ns, end_ns) = self.range(now_ns);
        match &self.kind {
            RuleKind::ErrorRate { service } => {
                // RedQuery's end is inclusive.
                let q = RedQuery {
                    start_ns,
                    end_ns: end_ns - 1,
                    step_ns: BUCKET_NS,
                    service: Some(service.clone()),
                    operation: None,
                };
                let (mut req, mut err) = (0u64, 0u64);
                for s in engine.red(q).await? {
                    if s.operation.is_none() {
                        for p in &s.points {
                            req += p.request_count;
                            err += p.error_count;
                        }
                    }
                }
                Ok((req > 0).then(|| err as f64 / req as f64))
            }
            RuleKind::Latency { metrics, .. } => {
                let a = engine
                    .metrics(MetricsQuery {
                        query: metrics.clone(),
                        start_ns,
                        end_ns,
                        step_ns: 0,
                        instant: true,
                        exemplars: 0,
                    })
                    .await?;
                Ok(a.series.iter().filter_map(|s| s.samples.first().map(|x| x.1)).find(|v| v.is_finite()))
            }
            RuleKind::TraceqlCount { metrics, .. } => {
                let a = engine
                    .metrics(MetricsQuery {
                        query: metrics.clone(),
                        start_ns,
                        end_ns,
                        step_ns: 0,
                        instant: true,
                        exemplars: 0,
                    })
                    .await?;
                Ok(Some(a.series.iter().flat_map(|s| s.samples.iter().map(|x| x.1)).sum()))
            }
        }
    }

    /// The path and query of the UI search that shows the traces behind
    /// the value at `now_ns` (`/search?...`, the parameters
    /// ui/web/src/pages/search.tsx reads), over the rule's range.
    pub fn search_link(&self, now_ns: u64) -> String {
        let (start, end) = self.range(now_ns);
        let mut q = form_urlencoded::Serializer::new(String::new());
        match &self.kind {
            RuleKind::ErrorRate { service } => {
                q.append_pair("service", service).append_pair("status", "error");
            }
            RuleKind::Latency { service, operation, .. } => {
                q.append_pair("service", service).append_pair("operation", operation);
                if matches!(self.comparison, Comparison::Gt | Comparison::Ge) && self.threshold > 0.0 {
                    let ms = (self.threshold * 1e3).floor();
                    q.append_pair("min_duration", &format!("{ms}ms"));
                }
            }
            RuleKind::TraceqlCount { query, .. } => {
                q.append_pair("q", query);
            }
        }
        q.append_pair("start", &start.to_string()).append_pair("end", &end.to_string());
        format!("/search?{}", q.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Rule, String> {
        let c: RuleConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        c.check(0, &["hook".into()], false)
    }

    #[test]
    fn rules_are_checked_field_by_field() {
        let r = rule("name = \"a\"\nkind = \"error_rate\"\nservice = \"cart\"\nthreshold = 0.05").unwrap();
        assert_eq!(r.expression(), "error_rate{service=\"cart\"}[5m] > 0.05");
        assert_eq!(r.labels["alertname"], "a");
        assert_eq!(r.receivers, ["hook"]);
        let r = rule(
            "name = \"slow\"\nkind = \"latency\"\nservice = \"cart\"\noperation = \"GET /\"\nthreshold = \"250ms\"\nquantile = 0.95\ncomparison = \">=\"\nwindow = \"10m\"\nfor = \"2m\"",
        )
        .unwrap();
        assert_eq!(r.threshold, 0.25);
        assert_eq!(r.for_, Duration::from_secs(120));
        assert!(r.search_link(600 * 1_000_000_000).contains("min_duration=250ms"));
        let r = rule("name = \"c\"\nkind = \"traceql_count\"\nquery = \"{ status = error }\"\nthreshold = 3")
            .unwrap();
        assert!(r
            .search_link(120_000_000_000)
            .starts_with("/search?q=%7B+status+%3D+error+%7D&start=0&end=120000000000"));
        for (text, want) in [
            ("name = \"x\"\nkind = \"error_rate\"\nthreshold = 1", "alert rule \"x\": service: kind \"error_rate\" needs it"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = \"1s\"", "alert rule \"x\": threshold"),
            ("name = \"x\"\nkind = \"latency\"\nservice = \"a\"\nthreshold = 1", "alert rule \"x\": operation"),
            ("name = \"x\"\nkind = \"latency\"\nservice = \"a\"\noperation = \"o\"\nquantile = 2.0\nthreshold = 1", "quantile"),
            ("name = \"x\"\nkind = \"traceql_count\"\nquery = \"{ status = \"\nthreshold = 1", "alert rule \"x\": query"),
            ("name = \"x\"\nkind = \"traceql_count\"\nquery = \"{ } | rate()\"\nthreshold = 1", "spanset query"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nquery = \"{}\"\nthreshold = 1", "alert rule \"x\": query: applies to kind traceql_count only"),
            ("name = \"x\"\nkind = \"errors\"\nthreshold = 1", "alert rule \"x\": kind"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\ncomparison = \"=>\"", "comparison"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\nwindow = \"0s\"", "window"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\nreceivers = [\"nope\"]", "receivers"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\ntenant = \"t1\"", "tenant"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1\nlabels = { \"a-b\" = \"c\" }", "labels"),
            ("name = \"\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1", "alerts.rules[0]: name"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 5", "5 is not a ratio between 0 and 1"),
            ("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = -0.1", "not a ratio"),
        ] {
            let e = rule(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let c: RuleConfig =
            toml::from_str("name = \"x\"\nkind = \"error_rate\"\nservice = \"a\"\nthreshold = 1").unwrap();
        assert!(c.check(0, &[], true).unwrap_err().contains("tenant"));
    }

    #[test]
    fn rollup_kinds_read_whole_minutes() {
        let r =
            rule("name = \"a\"\nkind = \"error_rate\"\nservice = \"cart\"\nthreshold = 0\nwindow = \"30s\"")
                .unwrap();
        let m = BUCKET_NS;
        assert_eq!(r.range(5 * m + 10), (4 * m, 6 * m));
        assert_eq!(r.range(5 * m + m / 2 + 1), (5 * m, 6 * m));
        assert!(Comparison::Gt.holds(0.5, 0.1) && !Comparison::Lt.holds(0.5, 0.1));
    }
}
