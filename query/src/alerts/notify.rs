//! Receivers (`[[alerts.receivers]]`) and what they are sent: the three
//! payload formats and their delivery.
//!
//! - `webhook`: Alertmanager's webhook payload (`version` "4", `status`,
//!   `alerts[]` with `labels`, `annotations`, `startsAt`, `endsAt`,
//!   `generatorURL`; Alertmanager docs, "webhook_config"), the de-facto
//!   generic alert JSON, plus each alert's `value` and `expression`.
//! - `slack`: a Slack incoming webhook's `{"text": ...}` (Slack docs,
//!   "Sending messages using incoming webhooks"), which Mattermost,
//!   Rocket.Chat and Discord's `/slack` endpoint also take.
//! - `alertmanager`: `POST {url}/api/v2/alerts` with an array of
//!   `{labels, annotations, startsAt, endsAt, generatorURL}`, as Prometheus
//!   sends to Alertmanager (Alertmanager's OpenAPI `postableAlerts`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One `[[alerts.receivers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique; rules name receivers by it.
    pub name: String,
    /// `webhook`, `slack` or `alertmanager`.
    pub kind: String,
    /// Where to POST: the webhook's URL, the Slack incoming-webhook URL,
    /// or Alertmanager's base URL (`/api/v2/alerts` is appended).
    pub url: String,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A receiver's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Alertmanager's webhook JSON.
    Webhook,
    /// `{"text": ...}`.
    Slack,
    /// Alertmanager's `/api/v2/alerts`.
    Alertmanager,
}

/// A checked receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Its name.
    pub name: String,
    /// Its format.
    pub format: Format,
    /// The URL posted to.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl ReceiverConfig {
    /// Checks the receiver; `index` is its place in the list.
    ///
    /// # Errors
    /// A message naming the receiver and the field at fault.
    pub fn check(&self, index: usize) -> Result<Receiver, String> {
        let who = if self.name.trim().is_empty() {
            format!("alerts.receivers[{index}]")
        } else {
            format!("alert receiver {:?}", self.name)
        };
        if self.name.trim().is_empty() {
            return Err(format!("{who}: name: must not be empty"));
        }
        let format = match self.kind.as_str() {
            "webhook" => Format::Webhook,
            "slack" => Format::Slack,
            "alertmanager" => Format::Alertmanager,
            k => {
                return Err(format!(
                    "{who}: kind: {k:?} is not one of \"webhook\", \"slack\", \"alertmanager\""
                ))
            }
        };
        let parsed: http::Uri = self.url.parse().map_err(|e| format!("{who}: url: {:?}: {e}", self.url))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(format!("{who}: url: {:?} is not an http:// or https:// URL", self.url));
        }
        let url = match format {
            Format::Alertmanager => format!("{}/api/v2/alerts", self.url.trim_end_matches('/')),
            _ => self.url.clone(),
        };
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            let name =
                http::HeaderName::try_from(k.as_str()).map_err(|e| format!("{who}: headers: {k:?}: {e}"))?;
            let value =
                http::HeaderValue::try_from(v.as_str()).map_err(|e| format!("{who}: headers: {k}: {e}"))?;
            headers.push((name, value));
        }
        Ok(Receiver { name: self.name.clone(), format, url, headers })
    }
}

/// Whether a notification says the alert fires or is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It fires.
    Firing,
    /// It stopped.
    Resolved,
}

/// A notification to one receiver, kept (on disk, with the rules' state)
/// until it is delivered or given up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The receiver's name.
    pub receiver: String,
    /// The rule's tenant.
    pub tenant: String,
    /// The rule's name.
    pub rule: String,
    /// Firing or resolved.
    pub status: Status,
    /// The alert's labels (`alertname` included).
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// The value that changed its state.
    pub value: Option<f64>,
    /// The rule's expression.
    pub expression: String,
    /// When it started firing, Unix ns.
    pub starts_at_ns: u64,
    /// When it was resolved (resolved), or until when a firing alert is
    /// valid unless sent again (Alertmanager), Unix ns.
    pub ends_at_ns: Option<u64>,
    /// The UI search showing the matching traces (absolute URL).
    pub url: String,
    /// Deliveries tried so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not to be tried before this, Unix ns.
    #[serde(default)]
    pub next_attempt_ns: u64,
    /// Why the last delivery failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// RFC 3339 of Unix ns (UTC).
pub fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Alertmanager's "no end" (Go's zero `time.Time`), as its webhook sends
/// for a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Notification {
    fn am_alert(&self) -> Value {
        let mut a = json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at_ns),
            "generatorURL": self.url,
        });
        if let Some(e) = self.ends_at_ns {
            a["endsAt"] = json!(rfc3339(e));
        }
        a
    }

    /// The JSON body for `format`, with `external_url` the Skein UI's base.
    pub fn payload(&self, format: Format, external_url: &str) -> Value {
        match format {
            Format::Alertmanager => json!([self.am_alert()]),
            Format::Webhook => {
                let status = match self.status {
                    Status::Firing => "firing",
                    Status::Resolved => "resolved",
                };
                let mut a = self.am_alert();
                a["status"] = json!(status);
                if self.status == Status::Firing {
                    a["endsAt"] = json!(ZERO_TIME);
                }
                a["value"] = json!(self.value);
                a["expression"] = json!(self.expression);
                a["tenant"] = json!(self.tenant);
                json!({
                    "version": "4",
                    "receiver": self.receiver,
                    "status": status,
                    "alerts": [a],
                    "groupLabels": {"alertname": self.rule},
                    "commonLabels": self.labels,
                    "commonAnnotations": self.annotations,
                    "externalURL": external_url,
                })
            }
            Format::Slack => {
                let (tag, word) = match self.status {
                    Status::Firing => ("FIRING", "fires"),
                    Status::Resolved => ("RESOLVED", "is resolved"),
                };
                let mut text = format!("[{tag}] {} {word}", self.rule);
                if let Some(v) = self.value {
                    text.push_str(&format!(" (value {v})"));
                }
                text.push_str(&format!("\n`{}`", self.expression));
                if let Some(s) = self.annotations.get("summary") {
                    text.push_str(&format!("\n{s}"));
                }
                if let Some(d) = self.annotations.get("description") {
                    text.push_str(&format!("\n{d}"));
                }
                // Slack's link syntax: <url|text>; `<`, `>` and `&` in the
                // URL are escaped as Slack asks.
                let url = self.url.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                text.push_str(&format!("\n<{url}|Show matching traces>"));
                json!({ "text": text })
            }
        }
    }
}

/// Posts `n` to `r`; `Ok` on a 2xx answer.
///
/// # Errors
/// The transport error or the status, as text (kept with the
/// notification for the next try).
pub async fn deliver(
    client: &reqwest::Client,
    r: &Receiver,
    n: &Notification,
    external_url: &str,
) -> Result<(), String> {
    let body = serde_json::to_vec(&n.payload(r.format, external_url)).map_err(|e| e.to_string())?;
    let mut req = client.post(&r.url).header(http::header::CONTENT_TYPE, "application/json").body(body);
    for (k, v) in &r.headers {
        req = req.header(k.clone(), v.clone());
    }
    let resp = req.send().await.map_err(|e| error_chain(&e))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {}", r.url, resp.status()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// The wait before try `attempts + 1` after `attempts` failed ones: the
/// evaluation interval, doubled per failure, at most `max`.
pub fn backoff(attempts: u32, interval: Duration, max: Duration) -> Duration {
    interval.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(status: Status) -> Notification {
        Notification {
            receiver: "hook".into(),
            tenant: "single-tenant".into(),
            rule: "cart errors".into(),
            status,
            labels: BTreeMap::from([
                ("alertname".into(), "cart errors".into()),
                ("severity".into(), "page".into()),
            ]),
            annotations: BTreeMap::from([("summary".into(), "cart fails".into())]),
            value: Some(0.5),
            expression: "error_rate{service=\"cart\"}[5m] > 0.05".into(),
            starts_at_ns: 1_700_000_000_000_000_000,
            ends_at_ns: (status == Status::Resolved).then_some(1_700_000_300_000_000_000),
            url: "http://skein:16686/search?service=cart&status=error&start=1&end=2".into(),
            attempts: 0,
            next_attempt_ns: 0,
            last_error: None,
        }
    }

    #[test]
    fn webhook_payload() {
        let v = n(Status::Firing).payload(Format::Webhook, "http://skein:16686");
        insta::assert_json_snapshot!("webhook_firing", v);
        let v = n(Status::Resolved).payload(Format::Webhook, "http://skein:16686");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["alerts"][0]["endsAt"], "2023-11-14T22:18:20Z");
    }

    #[test]
    fn slack_payload() {
        let v = n(Status::Firing).payload(Format::Slack, "http://skein:16686");
        insta::assert_json_snapshot!("slack_firing", v);
        let v = n(Status::Resolved).payload(Format::Slack, "");
        assert!(v["text"].as_str().unwrap().starts_with("[RESOLVED] cart errors is resolved"));
    }

    #[test]
    fn alertmanager_payload() {
        let v = n(Status::Firing).payload(Format::Alertmanager, "");
        insta::assert_json_snapshot!("alertmanager_firing", v);
        let v = n(Status::Resolved).payload(Format::Alertmanager, "");
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:18:20Z");
    }

    #[test]
    fn receivers_are_checked() {
        let r = |kind: &str, url: &str| {
            ReceiverConfig { name: "r".into(), kind: kind.into(), url: url.into(), headers: BTreeMap::new() }
                .check(0)
        };
        assert_eq!(r("alertmanager", "http://am:9093/").unwrap().url, "http://am:9093/api/v2/alerts");
        assert!(r("pagerduty", "http://x").unwrap_err().contains("alert receiver \"r\": kind"));
        assert!(r("webhook", "ftp://x").unwrap_err().contains("url"));
        assert!(r("webhook", "not a url").unwrap_err().contains("url"));
        let s = Duration::from_secs(1);
        assert_eq!(backoff(1, s, 60 * s), s);
        assert_eq!(backoff(3, s, 60 * s), 4 * s);
        assert_eq!(backoff(30, s, 60 * s), 60 * s);
    }
}
